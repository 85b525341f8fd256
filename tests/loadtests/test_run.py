"""``make loadtest``'s command line: our config, the host from --host or LOCUST_HOST, and reports in reports/."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import run


def test_the_command_uses_the_config_the_host_and_the_reports_dir(tmp_path):
    command = run.locust_command("http://127.0.0.1:3123", tmp_path, ["--users", "4"])
    assert command[command.index("--config") + 1] == str(run.CONFIG)
    assert command[command.index("--host") + 1] == "http://127.0.0.1:3123"
    assert command[command.index("--html") + 1] == str(tmp_path / "loadtest.html")
    assert command[command.index("--csv") + 1] == str(tmp_path / "loadtest")
    assert command[-2:] == ["--users", "4"]


def test_the_config_never_names_a_host():
    lines = [line.split("=", 1) for line in run.CONFIG.read_text().splitlines() if "=" in line and not line.startswith("#")]
    settings = {key.strip(): value.strip() for key, value in lines}
    assert "host" not in settings
    assert Path(run.REPO_ROOT / settings["locustfile"]).is_file()


def test_without_a_host_it_says_how_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv("LOCUST_HOST", raising=False)
    with pytest.raises(SystemExit):
        run.main([])
    assert "--host" in capsys.readouterr().err
