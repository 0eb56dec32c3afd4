"""The tracking page in a real browser (Playwright + Debian's headless Chromium, phone-sized), on the
whole stack: a shipment taken to OUT_FOR_DELIVERY by real scans through the scan pipeline, the page
shows status and timeline, and the driver's marker moves as heartbeats go app -> API -> Kafka ->
driver-locations topology -> Redis -> SSE. A screenshot is kept under artifacts/test/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from api.testing import Process, api_server, driver_locations_job
from config.settings import ROOT, Settings
from simulator.driver import offset_point, out_for_delivery, wait_status
from tests.integration.pipeline import PipelineProcess, start_group_at_end

ARTIFACTS = ROOT / "artifacts" / "test"
DRIVER = {"Authorization": "Bearer dev-driver-key"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("page")


@pytest.fixture(scope="module")
def pipeline(stack: Settings, workdir: Path) -> Iterator[PipelineProcess]:
    group = f"test-page-pipeline-{uuid.uuid4().hex[:8]}"
    start_group_at_end(stack, group)
    p = PipelineProcess(group, workdir / "state", workdir / "pipeline.log").start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def locations(stack: Settings, workdir: Path) -> Iterator[Process]:
    p = driver_locations_job(stack, workdir)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def server(stack: Settings, workdir: Path) -> Iterator[str]:
    proc, url = api_server(workdir / "api.log")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        pg = ctx.new_page()
        yield pg
        ctx.close()
        browser.close()


def test_page_shows_status_timeline_and_the_driver_moving(stack: Settings, pipeline: PipelineProcess,
                                                          locations: Process, server: str, page: Page) -> None:
    driver = f"drv-page-{uuid.uuid4().hex[:6]}"
    label = out_for_delivery(stack, driver)
    assert wait_status(stack, label.shipment_id, "OUT_FOR_DELIVERY", timeout=240), pipeline.log.read_text()[-3000:]

    page.goto(f"{server}/t/{label.tracking_number}")
    expect(page.locator("#status")).to_have_text("Out for delivery")
    expect(page.locator("#steps li.current")).to_have_text("Out for delivery")
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(5)  # label, pickup, departure, arrival, out for delivery
    expect(timeline.first).to_contain_text("Out for delivery")
    expect(page.locator("#eta")).to_contain_text("delivery")
    expect(page.locator("#live")).to_contain_text("Live", timeout=20_000)
    # the offline US outline was drawn (no tiles here)
    expect(page.locator("path.leaflet-interactive, .leaflet-overlay-pane path").first).to_be_attached()

    info = page.locator("#driver-info")
    positions = [offset_point(label.dest_lat, label.dest_lng, km, 315.0) for km in (2.0, 1.0)]
    seen = []
    for lat, lng in positions:
        r = httpx.post(f"{server}/v1/drivers/{driver}/location", json={"lat": lat, "lng": lng}, headers=DRIVER)
        assert r.status_code == 202, r.text
        expect(info).to_have_attribute("data-lat", str(round(lat, 5)), timeout=30_000)
        marker = page.locator("path.driver-marker")
        expect(marker).to_have_count(1)
        seen.append((marker.get_attribute("d"), info.text_content()))
    assert seen[0][0] != seen[1][0], "the driver marker did not move on the map"
    assert "km away" in (seen[1][1] or "")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tracking_page.png"), full_page=True)
    assert (ARTIFACTS / "tracking_page.png").stat().st_size > 10_000


def test_unknown_tracking_number_page(server: str, page: Page) -> None:
    resp = page.goto(f"{server}/t/PT0000000000000000X")
    assert resp is not None and resp.status == 404
    expect(page.locator("#not-found")).to_be_visible()
