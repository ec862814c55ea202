"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`helios-doit serve` and real video jobs. Screenshots of the pages are kept as test artifacts
(`.test-artifacts/`, or $HELIOS_DOIT_TEST_ARTIFACTS)."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from harness import HELIOS_DOIT, REPO, new_job
from PIL import Image
from serving import Server, serving, start_server

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("HELIOS_DOIT_TEST_ARTIFACTS") or REPO / ".test-artifacts")
#: As the machine's probe starts it: no sandbox as root, and nothing that reaches for the internet.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

COMPOSITION = '''
import time
import numpy as np
from helios_doit.video.composition import Composition

comp = Composition(width=160, height=90, fps=12, duration={duration})

@comp.frame
def draw(f):
    time.sleep({delay})
    img = np.zeros((f.height, f.width, 3), np.uint8)
    img[..., 2] = 90
    img[30:60, : f.index * 4 + 4, 1] = 220
    return img
'''


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), "Debian's chromium is needed: apt-get install chromium (.ci/run does)"
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def video_job(folder: Path, chunks: int, duration: float = 2, delay: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comp.py").write_text(COMPOSITION.format(duration=duration, delay=delay))
    emitted = subprocess.run([HELIOS_DOIT, "render", "comp.py", "-o", "out.mp4", "--emit-job", "job.json",
                              "--concurrency", str(chunks)], cwd=folder, capture_output=True, text=True)
    assert emitted.returncode == 0, emitted.stderr
    return folder / "job.json"


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def done_cells(page) -> int:
    return page.locator(".chunk[data-state=done]").count()


def test_a_finished_job_shows_a_done_cell_and_a_decodable_thumbnail_per_chunk_and_a_failed_chunk_its_reason(
        tmp_path, browser):
    finished = video_job(tmp_path / "shot1", chunks=3)
    failing = new_job(tmp_path / "shot2", chunks=3, frames=2)
    (failing.folder / "fail-1").touch()  # the stand-in renderer crashes on chunk 1
    with serving(tmp_path / "data", tmp_path) as server:
        good = server.submit(finished, concurrency=2)
        bad = server.submit(failing.file, keepGoing=True)
        server.wait(good, "completed")
        server.wait(bad, "failed")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{server.url}/jobs/{good}")
        page.wait_for_function("document.querySelectorAll('.chunk[data-state=done] img.thumb').length === 3 && "
                               "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
        assert [page.locator(".chunk").nth(i).get_attribute("data-chunk") for i in range(3)] == ["0", "1", "2"]
        for chunk in range(3):  # what the browser showed is a picture of that chunk's first frame
            response = page.request.get(f"{server.url}/api/jobs/{good}/chunks/{chunk}/thumbnail")
            picture = Image.open(io.BytesIO(response.body()))
            assert response.ok and picture.size == (320, 180) and picture.getpixel((2, 2))[2] > 60
        page.wait_for_function("document.querySelector('img.seams') && document.querySelector('img.seams').naturalWidth > 0")
        shot(page, "job-finished-desktop")
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(page, "job-finished-phone")

        page.goto(f"{server.url}/jobs/{bad}")
        failed = page.locator('.chunk[data-chunk="1"]')
        failed.wait_for()
        assert failed.get_attribute("data-state") == "failed"
        assert "exit code 3" in failed.locator(".reason").inner_text()
        failed.locator(".log-toggle").click()
        page.wait_for_function("document.querySelector('.chunk[data-chunk=\"1\"] pre.log').textContent.includes('crashed')")
        assert [page.locator(f'.chunk[data-chunk="{i}"]').get_attribute("data-state") for i in (0, 2)] == ["done", "done"]
        shot(page, "job-failed-phone")

        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(server.url + "/")
        page.locator(f'tr[data-job="{good}"]').wait_for()  # the queue has arrived
        page.locator('button[data-filter="failed"]').click()
        page.locator(f'tr[data-job="{good}"]').wait_for(state="hidden")
        assert page.locator("tr[data-job]:visible").count() == 1
        assert page.locator(f'tr[data-job="{bad}"]').is_visible()
        shot(page, "queue-failed-filter")
        page.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_running_job_updates_live_pauses_from_its_button_and_the_page_survives_a_server_restart(tmp_path, browser):
    job = video_job(tmp_path / "shot", chunks=4, duration=2, delay=0.12)  # 6 frames a chunk: ~0.8 s each
    port = free_port()
    server = start_server(tmp_path / "data", tmp_path, "--port", str(port))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        job_id = server.submit(job)  # one chunk at a time
        page.goto(f"{server.url}/jobs/{job_id}")
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        seen = []
        for count in (1, 2):  # cells turn done one by one, without a reload
            page.wait_for_function(f"document.querySelectorAll('.chunk[data-state=done]').length >= {count}", timeout=30000)
            seen.append(done_cells(page))
        page.locator('button[data-action="pause"]').click()
        server.wait(job_id, "paused")
        assert server.job(job_id)["state"] == "paused"  # through the API
        page.wait_for_function("document.querySelector('.job-head').dataset.state === 'paused'")
        shot(page, "job-paused")
        server.stop()  # the server goes away ...
        page.wait_for_selector('[data-testid="reconnecting"]:not([hidden])', timeout=15000)
        server = start_server(tmp_path / "data", tmp_path, "--port", str(port))  # ... and comes back
        page.wait_for_selector('[data-testid="reconnecting"]', state="hidden", timeout=30000)
        page.locator('button[data-action="resume"]').click()
        page.wait_for_function("document.querySelectorAll('.chunk[data-state=done]').length === 4", timeout=60000)
        page.wait_for_function("document.querySelector('.job-head').dataset.state === 'completed'", timeout=30000)
        assert page.evaluate("window.loadedOnce === true")  # all of it live, on the same page
        assert seen[0] >= 1 and seen[1] >= 2
        shot(page, "job-live-completed")
    finally:
        page.close()
        server.stop()


def test_with_a_token_the_dashboard_asks_for_it_once_then_keeps_a_cookie(tmp_path, browser):
    job = new_job(tmp_path / "shot", chunks=2, frames=1)
    with serving(tmp_path / "data", tmp_path, token="open-sesame") as server:
        job_id = server.submit(job.file)
        server.wait(job_id, "completed")
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.url + "/")
        form = page.locator('form[data-testid="login"]')
        form.wait_for()
        form.locator('input[name="token"]').fill("wrong")
        form.locator('button[type="submit"], input[type="submit"]').first.click()
        page.wait_for_function("document.querySelector('.login-error') && "
                               "document.querySelector('.login-error').textContent.length > 0")
        form.locator('input[name="token"]').fill("open-sesame")
        form.locator('button[type="submit"], input[type="submit"]').first.click()
        page.locator(f'tr[data-job="{job_id}"]').wait_for()
        context.close()
        other = browser.new_context()  # the token once in the address, then a cookie
        page = other.new_page()
        page.goto(f"{server.url}/?token=open-sesame")
        page.locator(f'tr[data-job="{job_id}"]').wait_for()
        assert "token" not in page.url
        assert page.request.get(f"{server.url}/api/jobs").ok
        other.close()
        assert isinstance(server, Server) and json.loads(json.dumps(server.job(job_id)))["state"] == "completed"
