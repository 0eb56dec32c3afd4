"""stack.servers._timer_slack: what a server spawned inside it inherits, and what the caller keeps."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stack.servers import _timer_slack


def _own_slack() -> int:
    import threading

    return int(Path(f"/proc/{threading.get_native_id()}/timerslack_ns").read_text())


def test_a_process_spawned_inside_inherits_the_slack_across_exec_and_the_caller_gets_its_own_back() -> None:
    before = _own_slack()
    with _timer_slack(2_000_000):
        out = subprocess.run(["cat", "/proc/self/timerslack_ns"], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 2_000_000
    assert _own_slack() == before != 2_000_000


def test_no_slack_asked_changes_nothing() -> None:
    before = _own_slack()
    with _timer_slack(0):
        out = subprocess.run(["cat", "/proc/self/timerslack_ns"], capture_output=True, text=True, check=True)
    assert int(out.stdout) == before
