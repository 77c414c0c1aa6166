"""End to end in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium).

The page loads and connects, a rendered frame arrives and is shown, a mouse drag on the canvas moves the camera
and produces a different frame, and the browser console has no errors. Skips (with the reason) when Chromium,
chromedriver, selenium or viser is missing; ``.ci/run`` installs Chromium so CI runs it.
"""
import io
import shutil
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("viser", reason="the viewer needs viser (pip install 'nfkit[viewer]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from test_viewer_server import start_app  # noqa: E402  (after the skips: it needs viser too)
from test_viewer_server import wait_for as server_wait_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install -y chromium chromium-driver)")
# Launch flags for the project machine (../shared/reference/environment.md); software WebGL (SwiftShader).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1000,700"]


def wait_for(cond, timeout=30.0):
    return server_wait_for(cond, timeout, 0.1)


def settled(session, quiet=0.8):
    """The session has shown a full-resolution frame and the camera has not moved for ``quiet`` seconds."""
    still = time.monotonic() - session.last_move > quiet
    return session.refined and still and session.rendered_move == session.last_move


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="nfkit-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def app():
    a = start_app(256)
    yield a
    a.stop()


def test_viewer_in_headless_chromium(app, browser):
    import imageio.v3 as iio
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{app.server.get_port()}/")
    # connected: the server registered the browser as a client (after its first camera message)
    assert wait_for(lambda: len(app.sessions) == 1), "the page never connected"
    session = next(iter(app.sessions.values()))
    # a rendered frame arrived; let the initial-camera reset settle, then note the frame
    assert wait_for(lambda: session.frames >= 1), "no frame was rendered"
    assert wait_for(lambda: settled(session)), "no full-resolution frame"
    first, frames0, pos0 = session.digest, session.frames, np.array(session.client.camera.position)

    # the frame is on the page: the canvas centre shows the frame's centre colour (the sphere, not background)
    canvas = browser.find_elements(By.TAG_NAME, "canvas")[0]
    time.sleep(0.5)
    shot = iio.imread(io.BytesIO(browser.get_screenshot_as_png()))[..., :3].astype(float)
    r = browser.execute_script("return window.devicePixelRatio") or 1
    cy = int((canvas.location["y"] + canvas.size["height"] / 2) * r)
    cx = int((canvas.location["x"] + canvas.size["width"] / 2) * r)
    img = session.last_image
    h, w = img.shape[0] // 2, img.shape[1] // 2
    expect = img[h - 2: h + 2, w - 2: w + 2].reshape(-1, 3).mean(0)
    seen = shot[cy - 2: cy + 2, cx - 2: cx + 2].reshape(-1, 3).mean(0)
    assert expect.min() < 200, "the frame centre should show the sphere, not background"
    assert np.abs(seen - expect).max() < 40, (seen, expect)

    # a mouse drag on the canvas orbits the camera: the browser reports it, a different frame comes back
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(80, 0).move_by_offset(80, 20) \
        .release().perform()
    assert wait_for(lambda: session.frames > frames0 and settled(session)), "no frame after the drag"
    assert np.linalg.norm(np.array(session.client.camera.position) - pos0) > 0.1, "the drag did not move the camera"
    assert session.digest != first, "the frame did not change"

    # no errors in the browser console (a favicon 404 would be harmless: ignored if it ever shows up)
    logs = browser.get_log("browser")
    severe = [e for e in logs if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert not severe, severe
    assert any("Connected" in e["message"] for e in logs), [e["message"][:80] for e in logs]
