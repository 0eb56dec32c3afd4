"""The main job's last-mile step (`simulator.driver.live_demo`): background jobs, a shipment taken
out for delivery by real scans, a detached simulated driver approaching its address through the
API, and a tracking page URL that shows it, ending DELIVERED."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.testing import free_port, free_port_block, wait_for
from config.settings import Settings
from simulator.driver import live_demo
from tests.integration.pipeline import PipelineProcess, start_group_at_end
from topologies import jobs


@pytest.fixture
def demo_settings(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The stack's settings with a private job folder and free ports; the scan pipeline job is this
    test's own group (the shared `scan-pipeline` group may hold a long backlog of other runs)."""
    s = stack.model_copy(update={
        "stack": stack.stack.model_copy(update={"dir": tmp_path / "stack"}),
        "api": stack.api.model_copy(update={"port": free_port()}),
        # live_demo's jobs listen on metrics.port + 0, 1, ...: a block of free ports, not one
        "metrics": stack.metrics.model_copy(update={"port": free_port_block(4)}),
    })
    group = f"test-demo-pipeline-{uuid.uuid4().hex[:8]}"
    start_group_at_end(s, group)
    pipeline = PipelineProcess(group, tmp_path / "state", tmp_path / "pipeline.log").start()
    (Path(s.stack.dir) / "jobs").mkdir(parents=True)
    assert pipeline.proc is not None
    (Path(s.stack.dir) / "jobs" / "scan-pipeline.pid").write_text(str(pipeline.proc.pid))
    yield s
    stopped = jobs.stop_all(s)  # api, driver-locations, driver-sim, and the pipeline above
    pipeline.stop()
    assert "api" in stopped and "driver-locations" in stopped


def test_live_demo_ends_with_a_page_where_the_driver_approaches(demo_settings: Settings) -> None:
    lines: list[str] = []
    url = live_demo(demo_settings, lines.append, driver_id=f"DRV-T-{uuid.uuid4().hex[:4]}", steps=6,
                    interval_s=1.5, wait_s=240)
    assert url.startswith(f"http://127.0.0.1:{demo_settings.api.port}/t/PT")
    assert any("tracking page:" in ln for ln in lines)
    tn = url.rsplit("/", 1)[1]
    page = httpx.get(url)
    assert page.status_code == 200 and "Out for delivery" in page.text
    api = url.split("/t/")[0]

    distances: list[float] = []

    def approaching() -> bool:
        d = httpx.get(f"{api}/v1/track/{tn}/poll").json().get("driver") or {}
        if d.get("distance_km") is not None and (not distances or d["distance_km"] != distances[-1]):
            distances.append(d["distance_km"])
        return len(distances) >= 2

    wait_for(approaching, 60, "the simulated driver's position to change", every=0.5)
    assert distances[-1] < distances[0]
    wait_for(lambda: httpx.get(f"{api}/v1/track/{tn}/poll").json()["status"] == "DELIVERED", 120,
             "the simulated driver to deliver", every=1.0)
