"""Schemathesis over the live service's OpenAPI document, every check on: generated and mutated requests
on every route, seeded, and no failure allowed (a 5xx, an undocumented status, a body that does not match
its schema, a schema-valid request refused, a schema-violating one accepted).

``schemathesis.toml`` beside this file widens two checks where the schema cannot say what the service
checks (an upload must also be a decodable image with ink in it); it says why for each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import start_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = int(os.environ.get("FUZZ_SEED", 20261128))
# Per operation and phase: 40 take about 40 s here; `make fuzz` runs 300 (FUZZ_EXAMPLES).
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 40))


def run_schemathesis(url: str, max_examples: int, seed: int) -> subprocess.CompletedProcess:
    schemathesis = Path(sys.executable).with_name("st")
    return subprocess.run(
        [str(schemathesis), "--config-file", str(CONFIG), "run", f"{url}/docs.json", "--checks", "all",
         "--max-examples", str(max_examples), "--seed", str(seed), "--no-color", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=max(900, 20 * max_examples),
    )


def test_schemathesis_finds_nothing(trained):
    with start_server(timeout=90) as server:
        result = run_schemathesis(server.url, MAX_EXAMPLES, SEED)
        log = server.log_tail(5_000_000)
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary.split("Test cases:")[-1], summary
    assert "Traceback" not in log, log[-4000:]
