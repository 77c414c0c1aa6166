"""``nfkit view FIELD [--host 127.0.0.1] [--port 8080]``: a browser viewer on viser (also ``nfkit fit --viewer``).

Renders are streamed as JPEG background images behind viser's 3D scene, which shows the field's AABB, the crop
box, the training cameras' frusta (when the field file's dataset or the attached fit provides them) and the
camera-path keyframes. Each connected browser gets a render thread running the state machine of
:func:`nfkit.viewer_policy.next_action`: while the camera moves, frames at the resolution that keeps the target
frame rate for the measured rays/s (JPEG quality 40); after 0.2 s without a camera message, a full-resolution
refinement (quality 75) rendered in strips and dropped as soon as the camera moves again.

Cameras: viser reports ``wxyz`` (R_world_camera) and ``position`` with **OpenCV** axes; everything here is
converted to nfkit's **OpenGL** c2w with :func:`nfkit.apps.camera_path.c2w_from_viser`.

Security: binds 127.0.0.1 unless told otherwise (and warns when it is not a loopback address); malformed client
messages are logged (rate-limited) and ignored; GUI values are validated before use; files written from the GUI
(camera path, video) are plain names inside the output folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from nfkit.apps import camera_path as cp
from nfkit.errors import NfkitError
from nfkit.viewer_policy import moving_resolution, next_action, static_resolution, train_steps_per_render, update_rate

log = logging.getLogger("nfkit.viewer")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_last_warned: dict[str, float] = {}


def warn_limited(key: str, msg: str, every: float = 5.0) -> None:
    """Log ``msg`` at most once per ``every`` seconds per ``key`` (a misbehaving client cannot flood the log)."""
    now = time.monotonic()
    if now - _last_warned.get(key, -1e9) >= every:
        _last_warned[key] = now
        log.warning(msg)


def harden_viser() -> None:
    """viser drops a connection (with a traceback) when a client message fails to decode; make it log one line
    and keep reading instead. Applied once; skipped if viser's internals differ from 1.x."""
    try:
        from viser.infra import _infra
    except ImportError:
        return
    if getattr(_infra, "_nfkit_hardened", False) or not hasattr(_infra, "_message_consumer"):
        return

    async def consumer(websocket, handle_message, message_class) -> None:
        while True:
            raw = await websocket.recv()
            try:
                if not isinstance(raw, bytes):
                    raise TypeError("text frame")
                message = message_class.deserialize(raw)
            except Exception as e:  # noqa: BLE001  (anything a hostile client can make msgpack/msgspec raise)
                warn_limited("decode", f"ignored a malformed client message ({type(e).__name__}: {str(e)[:80]})")
                continue
            handle_message(message)

    _infra._message_consumer = consumer
    _infra._nfkit_hardened = True


def camera_state(cam):
    """Validated snapshot of a viser camera: (c2w [4, 4] OpenGL, fov_y degrees, aspect, canvas height) or None."""
    try:
        wxyz = np.asarray(cam.wxyz, dtype=np.float64).reshape(4)
        pos = np.asarray(cam.position, dtype=np.float64).reshape(3)
        fov, w, h = float(cam.fov), int(cam.image_width), int(cam.image_height)
    except Exception:  # noqa: BLE001  (wrong types or shapes from a client)
        return None
    if not (np.isfinite(wxyz).all() and np.isfinite(pos).all() and np.linalg.norm(wxyz) > 1e-6):
        return None
    if not (0.01 < fov < 3.1 and 0 < w <= 16384 and 0 < h <= 16384):
        return None
    return cp.c2w_from_viser(wxyz, pos), math.degrees(fov), w / h, h


class TrainGate:
    """Serialises renders with a fit running in another thread: a render waits until the training thread parks
    in :meth:`serve` (called between steps); once training is over (:meth:`release`) renders pass freely."""

    def __init__(self, active: bool = False):
        self.cond, self.requests, self.paused, self.active = threading.Condition(), 0, False, active

    def __enter__(self):
        with self.cond:
            self.requests += 1
            self.cond.notify_all()
            while self.active and not self.paused:
                self.cond.wait(0.05)

    def __exit__(self, *exc):
        with self.cond:
            self.requests -= 1
            self.cond.notify_all()

    def serve(self, hold=lambda: False) -> None:
        """Training side: let pending renders run; stay parked while ``hold()`` (camera moving, paused)."""
        with self.cond:
            if not self.requests and not hold():
                return
            self.paused = True
            self.cond.notify_all()
            while self.requests or hold():
                self.cond.wait(0.02)
            self.paused = False

    def release(self) -> None:
        with self.cond:
            self.active = False
            self.cond.notify_all()


class ClientSession(threading.Thread):
    """Render loop of one browser (see the module docstring)."""

    def __init__(self, app: "ViewerApp", client):
        super().__init__(daemon=True, name=f"nfkit-view-{client.client_id}")
        self.app, self.client = app, client
        self.wake, self.stopped = threading.Event(), False
        self.last_move, self.rendered_move, self.refined, self.rendered_step = time.monotonic(), -1.0, False, -1
        self.frames, self.digest, self.last_size = 0, "", (0, 0)
        client.camera.on_update(lambda _cam: self.moved())

    def moved(self) -> None:
        self.last_move = time.monotonic()
        self.wake.set()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def run(self) -> None:
        while not self.stopped:
            try:
                self.step()
            except Exception as e:  # noqa: BLE001  (a render error must not kill the session)
                warn_limited("render", f"render failed: {type(e).__name__}: {e}")
                time.sleep(0.2)

    def step(self) -> None:
        app, now = self.app, time.monotonic()
        action = next_action(now, self.last_move, self.rendered_move, self.refined)
        if action == "wait" and app.trainer is not None and self.refined:
            if app.trainer.step - self.rendered_step >= app.steps_per_render():
                action = "high"  # show training progress at the static resolution
        if action == "wait":
            self.wake.wait(0.05 if self.refined else 0.21)
            self.wake.clear()
            return
        state = camera_state(self.client.camera)
        stamp = self.last_move
        if state is None:
            warn_limited("camera", f"client {self.client.client_id}: ignored an invalid camera state")
            self.rendered_move, self.refined = stamp, True
            return
        c2w, fov, aspect, canvas_h = state
        s = app.settings()
        if action == "low":
            size = moving_resolution(app.rays_per_s, s["fps"], aspect, s["max_res"])
        else:
            size = static_resolution(aspect, s["max_res"], canvas_h)
        stop = (lambda: self.stopped or self.last_move != stamp) if action == "high" else (lambda: self.stopped)
        with app.render_lock, app.gate:
            step = app.trainer.step if app.trainer is not None else 0
            t0 = time.perf_counter()
            img = cp.render_view(app.field, app.grid, app.opts, c2w, size[0], size[1], fov, s["mode"], s["bg"],
                                 s["crop"], stop)
            dt = time.perf_counter() - t0
        if img is None:
            return  # interrupted by a camera move
        app.rays_per_s = update_rate(app.rays_per_s, size[0] * size[1], dt)
        app.render_s = dt if action == "high" else app.render_s
        self.client.scene.set_background_image(img, format="jpeg", jpeg_quality=40 if action == "low" else 75)
        self.frames, self.digest, self.last_size = self.frames + 1, hashlib.md5(img.tobytes()).hexdigest(), size
        self.rendered_move, self.refined, self.rendered_step = stamp, action == "high", step
        app.frames_sent += 1


class ViewerApp:
    """The viser server, its scene and GUI, and one :class:`ClientSession` per browser.

    field, grid, opts: what :func:`nfkit.renderers.load_renderable` returns (or the trainer's live objects).
    train_cameras: optional (c2w [N, 4, 4] OpenGL, fov_y degrees [N], aspect, thumbnails uint8 [N, h, w, 3] or None).
    """

    def __init__(self, field, grid, opts, host: str = "127.0.0.1", port: int = 8080, max_res: int = 512,
                 target_fps: float = 10.0, out_dir=".", train_cameras=None, trainer=None, verbose: bool = True):
        import viser

        from nfkit.apps import viewer_gui

        harden_viser()
        if host not in LOOPBACK:
            log.warning(f"nfkit view: binding {host}: anyone who can reach port {port} can see the field and drive "
                        "renders (no authentication); use an SSH tunnel to 127.0.0.1 where you can")
        self.field, self.grid, self.trainer = field, grid, trainer
        self.opts = dataclasses.replace(opts)
        self.out_dir = Path(out_dir)
        self.gate, self.render_lock = TrainGate(active=trainer is not None), threading.Lock()
        self.rays_per_s, self.render_s, self.train_s, self.frames_sent = 0.0, 0.0, 0.0, 0
        self.sessions: dict[int, ClientSession] = {}
        self.keyframes: list[np.ndarray] = []
        self.server = viser.ViserServer(host=host, port=port, label="nfkit", verbose=False)
        self.url = f"http://{host if ':' not in host else '[' + host + ']'}:{self.server.get_port()}"
        self.gui = viewer_gui.build(self, max_res, target_fps, train_cameras)
        self.warm_up()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        if verbose:
            print(f"nfkit view: {self.url}  (Ctrl-C to stop)", flush=True)

    def warm_up(self) -> None:
        """One small render each way (fp32, bf16): keeps the faster and seeds the rays/s estimate."""
        c2w = cp.look_at(self.center + self.radius * np.array([1.0, -1.0, 0.6]), self.center)
        best = None
        for bf16 in (False, True):
            self.opts.bf16 = bf16
            with self.gate:
                cp.render_view(self.field, self.grid, self.opts, c2w, 32, 32, 50.0)
                t0 = time.perf_counter()
                cp.render_view(self.field, self.grid, self.opts, c2w, 64, 64, 50.0)
                dt = time.perf_counter() - t0
            if best is None or dt < 0.9 * best[1]:
                best = (bf16, dt)
        self.opts.bf16 = best[0]
        self.rays_per_s = 64 * 64 / best[1]

    @property
    def center(self) -> np.ndarray:
        return self.field.aabb.mean(0).cpu().double().numpy()

    @property
    def radius(self) -> float:
        return float((self.field.aabb[1] - self.field.aabb[0]).norm()) * 0.75

    def settings(self) -> dict:
        return self.gui.settings()

    def changed(self) -> None:
        """A setting changed: every client re-renders (as after a camera move)."""
        for s in list(self.sessions.values()):
            s.moved()

    def steps_per_render(self) -> int:
        return train_steps_per_render(self.train_s, self.render_s, self.settings()["train_util"])

    def camera_moving(self, window: float = 0.1) -> bool:
        now = time.monotonic()
        return any(now - s.last_move < window for s in list(self.sessions.values()))

    def _connect(self, client) -> None:
        session = ClientSession(self, client)
        self.sessions[client.client_id] = session
        session.start()

    def _disconnect(self, client) -> None:
        session = self.sessions.pop(client.client_id, None)
        if session is not None:
            session.stop()

    def attach(self, trainer):
        """Returns the ``callback(trainer)`` for :meth:`Trainer.fit`: records progress, lets pending renders run
        (training parks while they do) and holds training while the camera moves or the GUI pauses it.
        ``trainer.train_step`` is wrapped on the instance to read each step's loss and time."""
        ema = {"loss": None}
        inner = trainer.train_step

        def timed_step():
            t0 = time.perf_counter()
            stats = inner()
            dt = time.perf_counter() - t0
            self.train_s = dt if self.train_s <= 0 else 0.9 * self.train_s + 0.1 * dt
            ema["loss"] = stats["loss"] if ema["loss"] is None else 0.9 * ema["loss"] + 0.1 * stats["loss"]
            return stats

        trainer.train_step = timed_step
        last = {"t": 0.0}

        def callback(tr) -> None:
            now = time.monotonic()
            if now - last["t"] > 0.5 and ema["loss"] is not None:
                last["t"] = now
                psnr = -10 * math.log10(max(ema["loss"], 1e-10))
                self.gui.set_progress(tr.step, tr.cfg.steps, ema["loss"], psnr, tr.elapsed)
            self.gate.serve(lambda: self.camera_moving() or self.gui.paused())

        return callback

    def training_done(self) -> None:
        self.gate.release()
        self.gui.set_progress(None, None, None, None, None)

    def stop(self) -> None:
        for s in list(self.sessions.values()):
            s.stop()
        self.gate.release()
        self.server.stop()

    def output_file(self, name: str, ext: str) -> Path:
        """A GUI-given file name -> path inside ``out_dir``; only ``[A-Za-z0-9_.-]+`` names with ``ext``."""
        name = str(name).strip()
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}", name) or not name.endswith(ext):
            raise NfkitError(f"file name {name!r}: use letters, digits, '_', '-', '.' only, ending in {ext}")
        return self.out_dir / name


def load_train_cameras(meta: dict, max_cams: int = 100):
    """Frusta of the dataset a field was fit on (``meta["info"]["source"]``, if it is still there and its
    normalisation matches the field file's), else None. Returns what :class:`ViewerApp` takes."""
    src = (meta.get("info") or {}).get("source")
    if not src or not Path(src).exists():
        return None
    try:
        from nfkit.datasets import load_dataset

        data = load_dataset(src, "train", max_side=48)
    except NfkitError as e:
        log.warning(f"no camera frusta: {e}")
        return None
    norm = (meta.get("normalization") or {}).get("transform")
    if norm is not None and not np.allclose(np.asarray(norm), data.transform.numpy(), atol=1e-5):
        log.warning(f"no camera frusta: {src} no longer matches the field's normalisation")
        return None
    return cameras_of(data, max_cams)


def cameras_of(data, max_cams: int = 100):
    """(c2w, fov_y deg, aspect, thumbnails) of up to ``max_cams`` cameras of a :class:`SceneData`."""
    from nfkit.datasets import composite

    idx = np.linspace(0, len(data) - 1, min(len(data), max_cams)).round().astype(int)
    cams = data.cameras
    fov = np.degrees(2 * np.arctan(0.5 * cams.height / cams.fy[idx].numpy()))
    imgs = data.images[idx]
    step = max(1, max(imgs.shape[1:3]) // 48)
    thumbs = composite(imgs[:, ::step, ::step], torch.ones(3)) if imgs.shape[-1] == 4 else imgs[:, ::step, ::step]
    thumbs = (thumbs.clamp(0, 1) * 255).to(torch.uint8).numpy()
    return cams.c2w[idx].double().numpy(), fov, cams.width / cams.height, thumbs


def serve_forever(app: ViewerApp) -> None:
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("nfkit view: stopped", file=sys.stderr)
    finally:
        app.stop()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit view", description="browser viewer of a field file")
    parser.add_argument("field", help="field file (.safetensors from nfkit fit)")
    add_viewer_args(parser, prefix="")
    return parser


def add_viewer_args(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--host/--port/--max-res/--target-fps`` (``--viewer-host`` ... with ``prefix="viewer-"``)."""
    parser.add_argument(f"--{prefix}host", default="127.0.0.1", help="address to bind (default: 127.0.0.1 only)")
    parser.add_argument(f"--{prefix}port", type=int, default=8080, help="port (default: 8080; next free if taken)")
    parser.add_argument(f"--{prefix}max-res", type=int, default=512, help="longer side of still frames (default 512)")
    parser.add_argument(f"--{prefix}target-fps", type=float, default=10.0, help="frame rate while moving (default 10)")


def check_viewer_args(host: str, port: int, max_res: int, fps: float) -> None:
    if not 0 < port < 65536:
        raise NfkitError(f"--port {port}: expected 1..65535")
    if not 32 <= max_res <= 4096:
        raise NfkitError(f"--max-res {max_res}: expected 32..4096")
    if not (math.isfinite(fps) and 0.5 <= fps <= 60):
        raise NfkitError(f"--target-fps {fps}: expected 0.5..60")
    try:
        import viser  # noqa: F401
    except ImportError:
        raise NfkitError("the viewer needs viser: pip install 'nfkit[viewer]' (or pip install viser)") from None


def run(ns: argparse.Namespace) -> None:
    from nfkit.renderers import load_renderable

    check_viewer_args(ns.host, ns.port, ns.max_res, ns.target_fps)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    field, grid, opts, meta = load_renderable(ns.field)
    app = ViewerApp(field, grid, opts, ns.host, ns.port, ns.max_res, ns.target_fps, out_dir=Path(ns.field).parent)
    threading.Thread(target=lambda: app.gui.show_cameras(load_train_cameras(meta)), daemon=True).start()
    serve_forever(app)


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
