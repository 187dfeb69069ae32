"""The agent's systemd unit: hardened for an offline box, rated by systemd itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "agent" / "service" / "lokal-agent.service"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_agent_unit_is_rated_ok_or_better() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=49", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert found.group(2) in ("SAFE", "OK"), found.group(0)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def test_agent_unit_settings_the_agent_relies_on() -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["ExecStart"].endswith("agent run --config /etc/lokal/agent.toml")
    assert settings["UMask"] == "0027"  # index 0640, directory 0750
    assert settings["PrivateNetwork"] == "yes" and settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/lokal"
    assert settings["KillSignal"] == "SIGTERM"  # the agent writes its batch, then exits 0
