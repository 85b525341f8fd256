"""Run by tests/deploy/test_kserve.py with the Python of .venv-kserve: check a manifest against KServe's own
schema, offline. KServe's Python SDK is generated from its CRDs' OpenAPI schema: each model class lists its
fields (``attribute_map``) and their types (``openapi_types``), and the Kubernetes types it embeds come
from the ``kubernetes`` client's models, generated the same way. An unknown field, a field of the wrong
type or a missing required one is reported.

    .venv-kserve/bin/python tests/deploy/kserve_schema_check.py MANIFEST.yaml   # prints problems; exit 1 if any
"""

import re
import sys

import kserve.models as kserve_models
import kubernetes.client.models as kubernetes_models
import yaml

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}


def model_class(name: str):
    return getattr(kserve_models, name, None) or getattr(kubernetes_models, name)


def check(value, type_name: str, path: str, problems: list[str]) -> None:
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        if type_name == "int" and isinstance(value, bool) or not isinstance(value, expected):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for index, item in enumerate(value):
            check(item, match.group(1), f"{path}[{index}]", problems)
        return
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping")
            return
        for key, item in value.items():
            check(item, match.group(1) or match.group(2), f"{path}.{key}", problems)
        return
    cls = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping")
        return
    json_to_attribute = {json_name: attribute for attribute, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in json_to_attribute:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        check(item, cls.openapi_types[json_to_attribute[key]], f"{path}.{key}", problems)


def main(path: str) -> int:
    manifest = yaml.safe_load(open(path))
    problems: list[str] = []
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("serving.kserve.io/v1beta1", "InferenceService"):
        problems.append("not a serving.kserve.io/v1beta1 InferenceService")
    check(manifest, "V1beta1InferenceService", "$", problems)
    print("\n".join(problems) or "ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
