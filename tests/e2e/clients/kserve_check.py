"""Run by tests/e2e/test_v2_clients.py with the Python of .venv-kserve (KServe's own client lives there):
speak v2 to the service with kserve.InferenceRESTClient, and print what it got as JSON.

    .venv-kserve/bin/python tests/e2e/clients/kserve_check.py URL CASES.json

CASES.json: {"digits": [[[...28x28...]], ...], "files": ["<base64 of an image file>", ...]}.
"""

import asyncio
import base64
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

MODEL = "mnist_cnn"


async def main(url: str, cases: dict) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60, retries=0))
    result = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, MODEL),
    }
    digits = np.asarray(cases["digits"], dtype=np.uint8)
    for binary in (False, True):
        tensor = InferInput(name="digits", shape=list(digits.shape), datatype="UINT8")
        tensor.set_data_from_numpy(digits, binary_data=binary)
        outputs = [RequestedOutput("digit", {"binary_data": binary}), RequestedOutput("probabilities", {"binary_data": binary})]
        response = await client.infer(url, InferRequest(MODEL, [tensor], request_id=f"uint8-{binary}",
                                                        request_outputs=outputs), model_name=MODEL)
        answer = {output.name: output.as_numpy() for output in response.outputs}
        result[f"uint8_{'binary' if binary else 'json'}"] = {
            "id": response.id, "digit": answer["digit"].tolist(),
            "probabilities_shape": list(answer["probabilities"].shape), "model_name": response.model_name,
        }
    files = np.array([base64.b64decode(item) for item in cases["files"]], dtype=np.object_)
    tensor = InferInput(name="images", shape=[len(files)], datatype="BYTES")
    tensor.set_data_from_numpy(files, binary_data=True)
    response = await client.infer(url, InferRequest(MODEL, [tensor], request_outputs=[RequestedOutput("digit", {"binary_data": True})]),
                                  model_name=MODEL)
    result["bytes_binary"] = {"digit": response.outputs[0].as_numpy().tolist()}
    await client.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.load(open(sys.argv[2]))))))
