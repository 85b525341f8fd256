"""``make loadtest``: run the Locust load test headless against a running service and keep its reports.

    python -m loadtests.run --host http://127.0.0.1:3000                 # settings from loadtests/locust.conf
    python -m loadtests.run --host http://... --users 8 --run-time 15s --slo-p95-ms 250

Writes ``reports/loadtest.html``, ``reports/loadtest_*.csv`` and ``reports/loadtest_summary.json`` (the SLO
verdict). Exits with Locust's exit code: 0 when every service-level objective was met, 1 otherwise.
Arguments this module does not know are passed to Locust as they are.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from loadtests.servers import REPO_ROOT, venv_script

logger = logging.getLogger(__name__)

CONFIG = REPO_ROOT / "loadtests" / "locust.conf"
REPORTS_DIR = REPO_ROOT / "reports"
REPORT_PREFIX = "loadtest"


def locust_command(host: str | None, reports_dir: Path, extra: list[str]) -> list[str]:
    """The Locust command line: our config file, the host, the report files, then ``extra``."""
    prefix = reports_dir / REPORT_PREFIX
    command = [venv_script("locust"), "--config", str(CONFIG),
               "--html", f"{prefix}.html", "--csv", str(prefix), "--summary-json", f"{prefix}_summary.json"]
    if host:
        command += ["--host", host]
    return command + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--host", "-H", default=os.environ.get("LOCUST_HOST"),
                        help="the service's base URL (default: $LOCUST_HOST)")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where the HTML, CSVs and summary go")
    args, extra = parser.parse_known_args(argv)
    if not args.host:
        parser.error("Give the service's URL with --host (or set LOCUST_HOST), e.g. --host http://127.0.0.1:3000.")
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    command = locust_command(args.host, args.reports_dir, extra)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("Running: %s", " ".join(command))
    code = subprocess.call(command, cwd=REPO_ROOT)
    logger.info("Load test %s (exit code %d); reports in %s", "passed" if code == 0 else "FAILED", code, args.reports_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
