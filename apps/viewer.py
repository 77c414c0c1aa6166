"""``nfkit view FIELD [--host 127.0.0.1] [--port 8080]``: a browser viewer on viser (also ``nfkit fit --viewer``).

Renders are streamed as JPEG background images behind viser's 3D scene, which shows the field's AABB, the crop
box, the training cameras' frusta (when the field file's dataset or the attached fit provides them) and the
camera-path keyframes. Each connected browser gets a render thread running the state machine of
:func:`nfkit.viewer_policy.next_action`: while the camera moves, frames at the resolution that keeps the target
frame rate for the measured rays/s (JPEG quality 40); after 0.2 s without a camera message, a full-resolution
refinement (quality 75) rendered in strips and dropped as soon as the camera moves again.

Cameras: viser reports ``wxyz`` (R_world_camera) and ``position`` with **OpenCV** axes; everything here is
converted to nfkit's **OpenGL** c2w with :func:`nfkit.apps.view_render.c2w_from_viser`.

Security: binds 127.0.0.1 unless told otherwise (and warns when it is not a loopback address); websocket
handshakes from a browser page of another origin are refused (:func:`origin_refusal`); malformed client
messages are logged (rate-limited) and ignored; GUI values are validated before use; files written from the GUI
(camera path, video) are plain names inside the output folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

from nfkit.apps import view_render as vr
from nfkit.apps.view_render import camera_state
from nfkit.errors import NfkitError
from nfkit.renderers import preview_options
from nfkit.renderers.view_density import stored_view_centres
from nfkit.viewer_policy import moving_resolution, next_action, static_resolution, train_steps_per_render, update_rate

log = logging.getLogger("nfkit.viewer")
STILL_BUDGET_S = 4.0  # longest expected still-frame render (viewing a file); it is interruptible anyway
STILL_BUDGET_TRAINING_S = 0.6  # the same while a fit runs: training is parked during a render
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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def origin_refusal(origin: str | None, host_header: str | None, local_ip: str | None) -> str | None:
    """Why a websocket handshake must be refused, or None to accept it.

    Browsers send ``Origin`` with every websocket handshake; a page of another site open in the user's browser
    could otherwise watch and drive the viewer. Accepted: no ``Origin`` (not a browser: scripts, tests), or an
    ``Origin`` whose host:port is the ``Host`` the browser connected to (the viewer's own page) and, when the server
    listens on a loopback address (``local_ip``), a loopback name (so a DNS-rebound name is refused too)."""
    import ipaddress
    from urllib.parse import urlsplit

    if origin is None:
        return None
    try:
        u = urlsplit(origin)
        netloc = u.netloc.lower()
        name = (u.hostname or "").lower()
    except ValueError:
        return f"malformed Origin {origin[:80]!r}"
    if u.scheme not in ("http", "https") or not netloc or netloc != (host_header or "").lower():
        return f"Origin {origin[:80]!r} is not this viewer ({host_header})"
    try:
        loopback_server = local_ip is not None and ipaddress.ip_address(local_ip.split("%")[0]).is_loopback
    except ValueError:
        loopback_server = False
    if loopback_server and name not in LOOPBACK_NAMES and not name.startswith("127."):
        return f"Origin {origin[:80]!r} is not a loopback name"
    return None


def guard_origins() -> None:
    """Make every websocket server of this process (viser's) refuse a handshake that :func:`origin_refusal`
    refuses, with HTTP 403, before viser sees it. Applied once, by wrapping ``process_request`` of
    ``websockets.asyncio.server.serve`` (viser 1.x passes its HTTP file server there)."""
    import http
    import inspect

    import websockets.asyncio.server as ws_server

    if getattr(ws_server.serve, "_nfkit_origin_guard", False):
        return
    plain_serve = ws_server.serve

    def wrap(process_request):
        async def guarded_request(connection, request):
            if request.headers.get("Upgrade", "").lower() == "websocket":
                local = connection.local_address[0] if connection.local_address else None
                why = origin_refusal(request.headers.get("Origin"), request.headers.get("Host"), local)
                if why is not None:
                    warn_limited("origin", f"refused a websocket connection: {why}")
                    return connection.respond(http.HTTPStatus.FORBIDDEN, "nfkit view: foreign Origin refused\n")
            if process_request is None:
                return None
            out = process_request(connection, request)
            return await out if inspect.isawaitable(out) else out

        return guarded_request

    class GuardedServe(plain_serve):  # serve is a class (an async context manager) in websockets >= 14
        _nfkit_origin_guard = True

        def __init__(self, *args, process_request=None, **kwargs):
            super().__init__(*args, process_request=wrap(process_request), **kwargs)

    ws_server.serve = GuardedServe


def host_warning(host: str, port: int) -> str | None:
    """The warning printed when the server binds anything but a loopback address (None for loopback)."""
    import ipaddress

    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"nfkit view: binding {host}: anyone who can reach port {port} can see the field and drive renders "
            "(no authentication); prefer an SSH tunnel to 127.0.0.1")


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
        self.frames, self.digest, self.last_size, self.good_state, self.last_image = 0, "", (0, 0), None, None
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
        stamp = self.last_move
        state = camera_state(self.client.camera)
        if state is None:  # keep showing the last valid camera
            warn_limited("camera", f"client {self.client.client_id}: ignored an invalid camera state")
            state = self.good_state
            if state is None:
                self.rendered_move, self.refined = stamp, True
                return
        self.good_state = state
        c2w, fov, aspect, canvas_h = state
        s = app.gui.settings()
        if action == "low":
            size = moving_resolution(app.rays_per_s, s["fps"], aspect, s["max_res"])
        else:
            budget = STILL_BUDGET_TRAINING_S if app.trainer is not None else STILL_BUDGET_S
            size = static_resolution(aspect, s["max_res"], canvas_h, app.rays_per_s, budget)
        stop = (lambda: self.stopped or self.last_move != stamp) if action == "high" else (lambda: self.stopped)
        with app.render_lock, app.gate:
            step = app.trainer.step if app.trainer is not None else 0
            t0 = time.perf_counter()
            frame = app.render(c2w, size, fov, s, stop)
            dt = time.perf_counter() - t0
        if frame is None or self.stopped:
            return  # interrupted by a camera move, or the client / server went away while it rendered
        img, depth = frame
        app.rays_per_s = update_rate(app.rays_per_s, size[0] * size[1], dt)
        app.render_s = dt if action == "high" else app.render_s
        self.client.scene.set_background_image(img, format="jpeg", jpeg_quality=40 if action == "low" else 75,
                                               depth=depth)  # depth: viser hides frusta/boxes behind the field
        self.frames, self.digest, self.last_size = self.frames + 1, hashlib.md5(img.tobytes()).hexdigest(), size
        self.last_image = img
        self.rendered_move, self.refined, self.rendered_step = stamp, action == "high", step
        app.frames_sent += 1
        app.gui.set_stats(size, dt, app.rays_per_s, action == "high")


class ViewerApp:
    """The viser server, its scene and GUI, and one :class:`ClientSession` per browser.

    field, grid, opts: what :func:`nfkit.renderers.load_renderable` returns (or the trainer's live objects).
    train_cameras: optional (c2w [N, 4, 4] OpenGL, fov_y degrees [N], aspect, thumbnails uint8 [N, h, w, 3] or None).
    view_centres: camera centres [C, 3] (world) for a field whose density depends on the view: its density cache
    holds the mean density seen from them (default: the centres of ``train_cameras``; neither: no cache).
    """

    def __init__(self, field, grid, opts, host: str = "127.0.0.1", port: int = 8080, max_res: int = 512,
                 target_fps: float = 10.0, out_dir=".", train_cameras=None, trainer=None, verbose: bool = True,
                 view_centres=None):
        import viser

        from nfkit.apps import viewer_gui

        harden_viser()
        guard_origins()
        warning = host_warning(host, port)
        if warning:
            log.warning(warning)
        self.field, self.grid, self.trainer, self.cache, self.cache_thread = field, grid, trainer, None, None
        if view_centres is None and train_cameras is not None:
            import torch

            view_centres = torch.as_tensor(np.asarray(train_cameras[0])[:, :3, 3], dtype=torch.float32)
        self.view_centres = view_centres
        self.center = field.aabb.mean(0).cpu().double().numpy()  # [3] world
        self.radius = float((field.aabb[1] - field.aabb[0]).norm()) * 0.75  # a comfortable viewing distance
        self.opts = dataclasses.replace(opts, bf16=True)  # exact marching (a fit changes the field every step)
        self.preview_opts = preview_options(opts)  # with the density cache, once there is one
        self.out_dir = Path(out_dir)
        self.gate, self.render_lock = TrainGate(), threading.Lock()  # the gate closes in attach()
        self.rays_per_s, self.render_s, self.train_s, self.frames_sent, self.stopping = 0.0, 0.0, 0.0, 0, False
        self.sessions: dict[int, ClientSession] = {}
        self.keyframes: list[np.ndarray] = []
        self.server = viser.ViserServer(host=host, port=port, label="nfkit", verbose=False)
        self.url = f"http://{host if ':' not in host else '[' + host + ']'}:{self.server.get_port()}"
        self.gui = viewer_gui.build(self, max_res, target_fps, train_cameras)
        self.warm_up()
        if trainer is None:
            self.start_cache()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        if verbose:
            print(f"nfkit view: {self.url}  (Ctrl-C to stop)", flush=True)

    def warm_up(self) -> None:
        """Two small renders: the first pays one-off costs, the second seeds the rays/s estimate."""
        c2w = vr.look_at(self.center + self.radius * np.array([1.0, -1.0, 0.6]), self.center)
        with self.gate:
            for n in (32, 64):
                t0 = time.perf_counter()
                vr.render_view(self.field, self.grid, self.opts, c2w, n, n, 50.0)
        self.rays_per_s = 64 * 64 / (time.perf_counter() - t0)

    def start_cache(self) -> None:
        from nfkit.renderers.view_density import view_dependent

        if view_dependent(self.field) and self.view_centres is None:  # no views to average over: exact marching
            return
        if self.field.kind != "density":  # the density cache draws density fields only (SDF: exact marching)
            return
        # Not a daemon: the interpreter must not exit while torch is inside the build (C++ abort).
        self.cache_thread = threading.Thread(target=self.build_cache, name="nfkit-view-cache")
        self.cache_thread.start()

    def build_cache(self) -> None:
        """Bake the density cache (seconds; frames are exact meanwhile), then switch every client to it."""
        from nfkit.renderers import DensityCache

        from nfkit.renderers.view_density import mean_view_density

        density = mean_view_density(self.field, self.view_centres)  # field.density unless view-dependent
        self.cache = DensityCache.build(self.field, self.grid, density_fn=density)
        self.changed()

    def render(self, c2w, size, fov: float, s: dict, stop=None):
        """One frame: (uint8 [H, W, 3], z-depth float32 [H, W]), or None if ``stop()``; preview settings with the
        density cache when there is one (the field is not training), else exact marching."""
        cache = self.cache
        opts = self.preview_opts if cache is not None else self.opts
        return vr.render_view(self.field, self.grid, opts, c2w, size[0], size[1], fov, s["mode"], s["bg"], s["crop"],
                              stop, cache=cache, with_depth=True)

    def changed(self) -> None:
        """A setting changed: every client re-renders (as after a camera move)."""
        for s in list(self.sessions.values()):
            s.moved()

    def steps_per_render(self) -> int:
        return train_steps_per_render(self.train_s, self.render_s, self.gui.settings()["train_util"])

    def camera_moving(self, window: float = 0.1) -> bool:
        now = time.monotonic()
        return any(now - s.last_move < window for s in list(self.sessions.values()))

    def _connect(self, client) -> None:
        self.sessions[client.client_id] = ClientSession(self, client)
        self.sessions[client.client_id].start()

    def _disconnect(self, client) -> None:
        session = self.sessions.pop(client.client_id, None)
        session.stop() if session is not None else None

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
        self.trainer, self.gate.active = trainer, True
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
        self.trainer = None  # the field is final: bake the cache for fast viewing
        self.start_cache()
        self.gui.set_progress(None, None, None, None, None)

    def stop(self) -> None:
        """Stop the server and wait for the render threads (they poll their stop flag between strips)."""
        self.stopping = True  # ends a video being rendered from the GUI, between two frames
        sessions = list(self.sessions.values())
        for s in sessions:
            s.stop()
        self.gate.release()
        self.server.stop()
        for s in sessions:
            s.join(timeout=10)
        if self.cache_thread is not None:
            self.cache_thread.join()


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
    parser.add_argument("--lines", default=None, help="a wireframe.json (nfkit wireframe) drawn over the field; "
                        "default: the wireframe.json beside the field file, if there is one")
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
    from nfkit.apps import viewer_gui
    from nfkit.renderers import load_renderable

    check_viewer_args(ns.host, ns.port, ns.max_res, ns.target_fps)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    field, grid, opts, meta = load_renderable(ns.field)
    beside = Path(ns.field).parent / "wireframe.json"
    lines = ns.lines or (beside if beside.is_file() else None)
    segments = None if lines is None else viewer_gui.wireframe_segments(lines, meta.get("normalization"))
    app = ViewerApp(field, grid, opts, ns.host, ns.port, ns.max_res, ns.target_fps, out_dir=Path(ns.field).parent,
                    view_centres=stored_view_centres(field, meta, ns.field))
    # frusta of the training cameras once the dataset is read (not a daemon: it may be inside torch at exit)
    threading.Thread(target=lambda: app.gui.show_cameras(viewer_gui.load_train_cameras(meta))).start()
    if segments is not None:
        app.gui.show_lines(segments)
        print(f"nfkit view: {len(segments)} wireframe edges from {lines}", flush=True)
    serve_forever(app)


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
