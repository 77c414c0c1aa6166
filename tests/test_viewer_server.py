"""The viewer server stays up and keeps rendering after malformed or unexpected client messages.

In-process: a :class:`ViewerApp` on an analytic field, driven by a plain websocket client speaking viser's
protocol (msgpack messages). Subprocess: ``nfkit view`` on a tiny random field file, hit with garbage over
websocket and HTTP, then stopped with Ctrl-C.
"""
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

viser = pytest.importorskip("viser", reason="the viewer needs viser (pip install 'nfkit[viewer]')")
msgspec = pytest.importorskip("msgspec")
ws_client = pytest.importorskip("websockets.sync.client")

from nfkit.apps import view_render as vr  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_message(c2w, w=96, h=64, fov_deg=45.0, **override) -> bytes:
    wxyz, pos = vr.viser_from_c2w(c2w)
    msg = {"type": "ViewerCameraMessage", "wxyz": wxyz.tolist(), "position": pos.tolist(),
           "fov": math.radians(fov_deg), "near": 0.01, "far": 100.0, "image_height": h, "image_width": w,
           "look_at": [0.0, 0.0, 0.0], "up_direction": [0.0, 0.0, 1.0]}
    msg.update(override)
    return msgspec.msgpack.encode(msg)


class Client:
    """A websocket client that drains everything the server sends (scene, GUI, frames) in a thread."""

    def __init__(self, port: int):
        self.ws = ws_client.connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                                    max_size=None, open_timeout=10)
        self.received = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            for _ in self.ws:
                self.received += 1
        except Exception:  # noqa: BLE001  (closed)
            pass

    def send(self, data):
        self.ws.send(data)

    def close(self):
        self.ws.close()


def http_status(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def raw_http(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        try:
            s.recv(4096)
        except OSError:
            pass


GARBAGE_HTTP = [b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: nonsense\r\nSec-WebSocket-Version: 13\r\n\r\n",
                b"GET /" + b"A" * 20000 + b" HTTP/1.1\r\n\r\n"]


def wait_for(cond, timeout=20.0, step=0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(step)
    return False


def start_app(max_res: int):
    """A viewer of the small test scene on a free local port (stop it with ``.stop()``)."""
    from test_camera_path import renderable

    from nfkit.apps.viewer import ViewerApp

    field, grid, opts = renderable()
    return ViewerApp(field, grid, opts, port=free_port(), max_res=max_res, verbose=False)


@pytest.fixture
def app():
    a = start_app(128)
    yield a
    a.stop()


@pytest.mark.filterwarnings("ignore:.*does not match annotation:UserWarning")  # viser's note on the bad camera
def test_malformed_messages_are_ignored_and_rendering_goes_on(app, caplog):
    port = app.server.get_port()
    c = Client(port)
    try:
        c.send(camera_message(vr.look_at((3.0, -1.0, 1.0), (0, 0, 0))))
        assert wait_for(lambda: app.sessions and next(iter(app.sessions.values())).refined), "no first frame"
        session = next(iter(app.sessions.values()))
        first = session.digest
        mode_id = app.gui.mode._impl.uuid
        res_id = app.gui.max_res._impl.uuid
        for bad in [b"\x00\xffgarbage", b"", os.urandom(300), "a text frame",
                    msgspec.msgpack.encode([1, 2, 3]), msgspec.msgpack.encode({"no": "type"}),
                    msgspec.msgpack.encode({"type": "NoSuchMessage", "x": 1}),
                    msgspec.msgpack.encode({"type": "ViewerCameraMessage", "wxyz": "abc"}),
                    camera_message(np.eye(4), wxyz=[float("nan")] * 4),
                    camera_message(np.eye(4), position=["a", "b", "c"]),
                    camera_message(np.eye(4), image_width=-5, fov=1e9),
                    msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": mode_id, "updates": {"value": "xray"}}),
                    msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": res_id, "updates": {"value": [1, 2]}}),
                    msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": res_id, "updates": {"nope": 1}}),
                    msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": "unknown", "updates": {}})]:
            c.send(bad)
        for payload in GARBAGE_HTTP:
            raw_http(port, payload)
        time.sleep(0.5)
        assert http_status(port) == 200
        # the same connection still works: a new view renders a new, different frame
        n0 = session.frames
        c.send(camera_message(vr.look_at((-3.0, 1.0, 1.5), (0, 0, 0))))
        assert wait_for(lambda: session.frames > n0 and session.refined and session.digest != first)
        assert app.gui.settings()["mode"] == "rgb"  # the unknown mode was replaced by the default
        assert any("malformed client message" in r.message for r in caplog.records)
        # and a second browser can still connect and get frames
        c2 = Client(port)
        c2.send(camera_message(vr.look_at((0.5, 3.0, 1.0), (0, 0, 0))))
        assert wait_for(lambda: len(app.sessions) == 2 and all(s.frames for s in app.sessions.values()))
        c2.close()
    finally:
        c.close()


def test_host_warning():
    from nfkit.apps.viewer import host_warning

    assert host_warning("127.0.0.1", 8080) is None
    assert host_warning("localhost", 8080) is None
    assert host_warning("::1", 8080) is None
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        assert "no authentication" in host_warning(host, 8080)


def _ctrl_c_reaches_child():
    """Popen's preexec_fn: SIGINT back to its default in the child.  A suite started in the background (``cmd &``,
    ``nohup``) runs with SIGINT ignored, the child inherits that across exec, and the Ctrl-C tests then hang."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_view_cli_survives_garbage_and_stops_on_ctrl_c(tmp_path):
    from nfkit import fields

    field = fields.build_field("hashgrid", {"n_levels": 2, "log2_hashmap_size": 10, "hidden": 16,
                                            "max_resolution": 32})
    fpath = fields.save(field, tmp_path / "tiny.safetensors")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nfkit.apps.cli", "view", str(fpath), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ctrl_c_reaches_child)
    lines = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            line = proc.stdout.readline()
            lines.append(line)
            if "nfkit view: http://127.0.0.1:" in line or not line:
                break
        assert proc.poll() is None, "".join(lines)
        actual = int(lines[-1].rsplit(":", 1)[1].split()[0])
        c = Client(actual)
        c.send(camera_message(vr.look_at((3.0, 0, 0), (0, 0, 0))))
        for bad in [b"\xc1\xc1\xc1", os.urandom(1000), msgspec.msgpack.encode({"type": 5})]:
            c.send(bad)
        for payload in GARBAGE_HTTP:
            raw_http(actual, payload)
        c.close()
        time.sleep(0.5)
        assert proc.poll() is None, "the server died"
        assert http_status(actual) == 200
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        lines.append(out)
        assert proc.returncode == 0, "".join(lines)
        assert "malformed client message" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_view_cli_bad_input(tmp_path):
    from nfkit.apps.cli import main

    assert main(["view", str(tmp_path / "missing.safetensors")]) == 2
    assert main(["view", str(tmp_path / "x.safetensors"), "--port", "70000"]) == 2


def test_fit_with_viewer_trains_with_a_browser_attached(tmp_path, sphere_capture):
    """``nfkit fit --viewer``: a client moving the camera during the fit; training finishes, outputs are written,
    the viewer keeps serving, and Ctrl-C ends it with exit code 0."""
    from conftest import TINY_FIELD

    port = free_port()
    out = tmp_path / "fit"
    proc = subprocess.Popen([sys.executable, "-m", "nfkit.apps.cli", "fit", str(sphere_capture), "--out", str(out),
                             "--steps", "40", "--viewer", "--viewer-port", str(port), *TINY_FIELD],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ctrl_c_reaches_child)
    lines = []
    try:
        line = ""
        while "nfkit view: http" not in line:
            line = proc.stdout.readline()
            lines.append(line)
            assert line, "".join(lines)
        actual = int(line.rsplit(":", 1)[1].split()[0])
        c = Client(actual)
        for i in range(10):  # move the camera for a while: training pauses meanwhile, frames keep coming
            c.send(camera_message(vr.look_at((3 * math.cos(i / 3), 3 * math.sin(i / 3), 1.0), (0, 0, 0))))
            time.sleep(0.05)
        while "training done" not in line:
            line = proc.stdout.readline()
            lines.append(line)
            assert line, "".join(lines)
        assert (out / "metrics.json").is_file() and (out / "field.safetensors").is_file()
        assert http_status(actual) == 200
        deadline = time.time() + 20  # the viewer keeps serving: let its messages arrive (slow under a loaded CI)
        while c.received <= 10 and time.time() < deadline:
            time.sleep(0.1)
        c.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + rest
        assert c.received > 10  # scene, GUI, progress and frames reached the browser
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_gui_camera_path_crop_and_output_names(app, tmp_path):
    """The GUI's handlers: keyframes from the browser's camera, saving and rendering the path (inside the output
    folder only), crop boxes validated before use."""
    from nfkit.apps import camera_path as cp
    from nfkit.errors import NfkitError

    app.out_dir = tmp_path
    c = Client(app.server.get_port())
    try:
        for eye in [(3.0, -1.0, 1.0), (1.0, 3.0, 1.5)]:
            c.send(camera_message(vr.look_at(eye, (0, 0, 0)), fov_deg=40.0))
            assert wait_for(lambda: app.sessions and np.allclose(
                next(iter(app.sessions.values())).client.camera.position, eye, atol=1e-6))
            app.gui._add_keyframe(next(iter(app.sessions.values())).client)
        assert len(app.keyframes) == 2 and np.allclose(app.keyframes[1][:3, 3], (1.0, 3.0, 1.5))
        app.gui.path_size.value, app.gui.path_seconds.value, app.gui.path_fps.value = (32, 24), 0.5, 4
        app.gui._save()
        path = cp.load_path(tmp_path / "camera_path.json")
        assert path.fov_deg == pytest.approx(40.0) and (path.width, path.height, path.n_frames()) == (32, 24, 2)
        app.gui._render_video()
        assert (tmp_path / "camera_path.mp4").stat().st_size > 0, app.gui.path_status.content
        for bad in ("../evil.json", "/etc/passwd.json", "a/b.json", "x.txt", "", ".hidden.json"):
            with pytest.raises(NfkitError):
                app.gui.output_file(bad, ".json")
        app.gui.path_name.value = "../escape.json"
        app.gui._save()
        assert "not saved" in app.gui.path_status.content and not (tmp_path.parent / "escape.json").exists()
    finally:
        c.close()
    app.gui.crop_on.value = True
    app.gui.crop_min.value, app.gui.crop_max.value = (0.5, -1.0, -1.0), (0.0, 1.0, 1.0)  # min > max on x
    assert app.gui.crop() is None
    app.gui.crop_min.value = (-0.5, -1.0, -1.0)
    lo, hi = app.gui.crop()
    assert lo.tolist() == [-0.5, -1.0, -1.0] and hi.tolist() == [0.0, 1.0, 1.0]


def test_wireframe_drawn_in_field_coordinates(app, tmp_path):
    """nfkit view draws an nfkit wireframe result: junctions in input coordinates go through the field file's
    normalisation; a file that is not a wireframe is a one-line error naming it."""
    from nfkit.apps.viewer_gui import wireframe_segments
    from nfkit.errors import NfkitError

    path = tmp_path / "wireframe.json"
    path.write_text(json.dumps({"junctions": [[2, 0, 0], [0, 4, 0], [0, 0, 6]], "lines": [[0, 1], [1, 2]]}))
    norm = {"transform": [[0.5, 0, 0, -1], [0, 0.5, 0, 0], [0, 0, 0.5, 1], [0, 0, 0, 1]], "scale": 0.5}
    seg = wireframe_segments(path, norm)
    np.testing.assert_allclose(seg, [[[0, 0, 1], [-1, 2, 1]], [[-1, 2, 1], [-1, 0, 4]]])
    handle = app.gui.show_lines(seg)
    np.testing.assert_allclose(handle.points, seg.astype(np.float32))
    path.write_text(json.dumps({"junctions": [[0, 0, 0]], "lines": [[0, 3]]}))
    with pytest.raises(NfkitError, match="wireframe.json: not a wireframe.json"):
        wireframe_segments(path, norm)
