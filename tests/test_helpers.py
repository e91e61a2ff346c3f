"""The tests' own subprocess helpers: a command that runs too long is killed together with its children."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import helpers


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_a_command_that_times_out_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"  # a child that would outlive a killed parent
    with pytest.raises(subprocess.TimeoutExpired):
        helpers.run(["bash", "-c", script], timeout=2)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
