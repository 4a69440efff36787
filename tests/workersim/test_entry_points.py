"""The simulator's two command lines: ``python -m workersim`` and the gateway's ``gateway sim`` verb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_python_m_workersim_parses_its_options() -> None:
    done = subprocess.run([sys.executable, "-m", "workersim", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.startswith("usage: python -m workersim")
    assert "--kv-capacity-tokens" in done.stdout


def test_gateway_sim_verb_is_kept() -> None:
    done = subprocess.run([str(BIN / "gateway"), "sim", "--help"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert "Run a simulated vLLM worker." in done.stdout
    assert "--kv-capacity" in done.stdout
