"""stack.servers.prune_orphan_pg_homes: PostgreSQL folders of removed checkouts are deleted, and
nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from stack.servers import OWNER_FILE, prune_orphan_pg_homes


def _home(root: Path, name: str, owner: Path | None, pid: int | None = None) -> Path:
    home = root / name
    (home / "data").mkdir(parents=True)
    if owner is not None:
        (home / OWNER_FILE).write_text(f"{owner}\n")
    if pid is not None:
        (home / "data" / "postmaster.pid").write_text(f"{pid}\n/x\n")
    return home


def test_only_stopped_folders_of_removed_checkouts_go(tmp_path: Path) -> None:
    root, live_checkout = tmp_path / "parcel-stack", tmp_path / "clone"
    live_checkout.mkdir()
    gone = tmp_path / "removed-clone"
    mine = _home(root, "mine", gone)  # the caller's own: kept even if its owner looks gone
    orphan = _home(root, "orphan", gone)
    crashed = _home(root, "crashed", gone, pid=2**22 + 12345)  # a stale pid file: no such process
    running = _home(root, "running", gone, pid=os.getpid())
    kept = _home(root, "kept", live_checkout)
    legacy = _home(root, "legacy", None)
    assert sorted(prune_orphan_pg_homes(root, keep=mine)) == sorted([orphan, crashed])
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in (mine, running, kept, legacy))


def test_a_missing_root_is_nothing_to_prune(tmp_path: Path) -> None:
    assert prune_orphan_pg_homes(tmp_path / "absent", keep=tmp_path / "absent" / "x") == []
