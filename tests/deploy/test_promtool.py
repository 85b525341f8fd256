"""deploy/prometheus checked by promtool: the config, the alert rules, and the rules' unit tests.

promtool comes with Debian's ``prometheus`` package (``make system-deps``); no server runs here (see
test_live_stack.py for the live one).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.metrics import METRIC_NAMES
from tests.deploy import stack

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    return stack.require_tool("promtool", how="apt-get install prometheus, or make system-deps")


def promtool_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_promtool_checks_the_config_and_its_rule_files():
    result = promtool_run("check", "config", str(stack.PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "1 rule files found" in result.stdout


def test_promtool_checks_the_alert_rules():
    result = promtool_run("check", "rules", str(stack.ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(stack.alert_rules())} rules found" in result.stdout


def test_the_alert_rules_pass_their_unit_tests():
    """alerts.test.yml feeds synthetic series through every rule: each fires when it should, and only then."""
    result = promtool_run("test", "rules", stack.ALERT_TESTS.name, cwd=stack.PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(stack.ALERT_TESTS.read_text().split("alertname: ")[1:])
    assert {line.split()[0] for line in tested} == {rule["alert"] for rule in stack.alert_rules()}


def test_the_alerts_a_user_needs_are_there():
    expressions = {rule["alert"]: rule["expr"] for rule in stack.alert_rules()}
    assert set(expressions) == {"DigitserveHighErrorRatio", "DigitserveHighLatencyP99", "DigitserveNoTraffic",
                                "DigitserveModelNotReady"}
    assert 'status=~"5.."' in expressions["DigitserveHighErrorRatio"]
    assert "histogram_quantile(0.99" in expressions["DigitserveHighLatencyP99"]
    assert "up{" in expressions["DigitserveModelNotReady"]
    assert "digitserve_model_info" in expressions["DigitserveModelNotReady"]
    for rule in stack.alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]


def test_the_rules_and_their_tests_name_only_metrics_the_service_exports():
    """promtool's tests feed the rules made-up series: a metric the service no longer exports (BentoML's
    ``bentoml_service_request_total``, turned off) would pass them and never fire in production."""
    exported = set(METRIC_NAMES.values())
    for path in (stack.ALERT_RULES, stack.ALERT_TESTS):
        for metric in set(re.findall(r"\b((?:digitserve|bentoml)_[a-z_]+)\b", path.read_text())):
            base = next((metric.removesuffix(s) for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
            assert metric in exported or base in exported, f"{path.name}: {metric} is not exported by the service"
