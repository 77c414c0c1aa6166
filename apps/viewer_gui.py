"""The viewer's GUI panel and 3D scene (split from :mod:`nfkit.apps.viewer` to keep modules small).

Every value a browser sends is validated when read (:meth:`ViewerGui.settings`): an unexpected dropdown
option, a NaN slider or an inverted crop box is logged and replaced by a safe default, never used.
Scene objects (viser uses OpenCV camera axes for frusta; see :mod:`nfkit.apps.view_render`):
``/bounds`` (field AABB), ``/crop``, ``/cameras/*`` (training frusta), ``/path/*`` (keyframes and the curve).
"""
from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import torch

from nfkit.apps import camera_path as cp
from nfkit.apps import view_render as vr
from nfkit.apps.view_render import camera_state
from nfkit.errors import NfkitError


def _log():
    from nfkit.apps.viewer import log

    return log


def _finite(v, n: int):
    try:
        a = np.asarray(v, dtype=np.float64).reshape(n)
    except (TypeError, ValueError):
        return None
    return a if np.isfinite(a).all() else None


def box_edges(lo, hi) -> np.ndarray:
    """The 12 edges of the box ``[lo, hi]`` as line segments [12, 2, 3]."""
    c = np.array([[hi[i] if (k >> i) & 1 else lo[i] for i in range(3)] for k in range(8)], dtype=np.float32)
    pairs = [(a, a | (1 << i)) for a in range(8) for i in range(3) if not (a >> i) & 1]
    return np.stack([np.stack([c[a], c[b]]) for a, b in pairs])


class ViewerGui:
    """The shared (all-browser) panel: View, Crop box, Camera path and, when attached to a fit, Training."""

    def __init__(self, app, max_res: int, target_fps: float):
        from nfkit.apps.viewer import warn_limited

        self.app, self.server, self.warn = app, app.server, warn_limited
        gui, scene = self.server.gui, self.server.scene
        lo, hi = (app.field.aabb.cpu().double().numpy()[i] for i in (0, 1))
        self.aabb = (lo, hi)
        scene.set_up_direction("+z")
        scene.add_line_segments("/bounds", box_edges(lo, hi), (90, 90, 90), thickness=2, thickness_units="screen")
        self.crop_box = scene.add_line_segments("/crop", box_edges(lo, hi), (255, 140, 0), thickness=2,
                                                thickness_units="screen", visible=False)
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up = tuple(app.center + app.radius * np.array([1.2, -1.0, 0.7])), \
            tuple(app.center), (0.0, 0.0, 1.0)
        with gui.add_folder("View"):
            self.mode = gui.add_dropdown("Render", vr.MODES, initial_value="rgb")
            self.bg = gui.add_rgb("Background", (255, 255, 255))
            self.max_res = gui.add_slider("Max resolution", 64, 2048, 32, int(min(max(max_res, 64), 2048)))
            self.fps = gui.add_slider("Target fps", 1.0, 30.0, 1.0, float(min(max(target_fps, 1), 30)))
            self.show_cams = gui.add_checkbox("Training cameras", True)
            self.stats = gui.add_markdown("waiting for a browser ...")
        with gui.add_folder("Crop box", expand_by_default=False):
            self.crop_on = gui.add_checkbox("Crop", False)
            self.crop_min = gui.add_vector3("Min", tuple(lo), step=0.01)
            self.crop_max = gui.add_vector3("Max", tuple(hi), step=0.01)
        with gui.add_folder("Camera path", expand_by_default=False):
            self.path_seconds = gui.add_number("Seconds", 4.0, min=0.1, max=600.0, step=0.1)
            self.path_fps = gui.add_number("FPS", 24, min=1, max=120, step=1)
            self.path_size = gui.add_vector2("Size (w, h)", (640, 360), min=(16, 16), max=(4096, 4096), step=2)
            add, clear = gui.add_button("Add keyframe"), gui.add_button("Clear keyframes")
            preview = gui.add_button("Preview")
            self.path_name = gui.add_text("Path file", "camera_path.json")
            save = gui.add_button("Save path")
            self.video_name = gui.add_text("Video file", "camera_path.mp4")
            render = gui.add_button("Render video")
            self.path_status = gui.add_markdown("0 keyframes")
        self.path_fov = 50.0
        self.progress = self.pause = self.util = None
        if app.trainer is not None:
            with gui.add_folder("Training"):
                self.progress = gui.add_markdown("starting ...")
                self.pause = gui.add_checkbox("Pause training", False)
                self.util = gui.add_slider("Train share of CPU", 0.5, 0.95, 0.05, 0.85)
        for h in (self.mode, self.bg, self.max_res, self.fps, self.crop_on, self.crop_min, self.crop_max):
            h.on_update(lambda _e: self._changed())
        self.show_cams.on_update(lambda _e: self._toggle_cameras())
        add.on_click(lambda e: self._add_keyframe(e.client))
        clear.on_click(lambda _e: self._clear())
        preview.on_click(lambda e: threading.Thread(target=self._preview, args=(e.client,), daemon=True).start())
        save.on_click(lambda _e: self._save())
        # not a daemon: ViewerApp.stop() ends it between frames (the interpreter must not exit inside torch)
        render.on_click(lambda _e: threading.Thread(target=self._render_video).start())
        self.frusta: list = []
        self.path_nodes: list = []
        self._last_stats = 0.0
        self._busy = threading.Lock()

    # ---------------------------------------------------------------- validated settings
    def settings(self) -> dict:
        mode = self.mode.value
        if mode not in vr.MODES:
            self.warn("mode", f"ignored unknown render mode {str(mode)[:40]!r}")
            mode = "rgb"
        bg = _finite(self.bg.value, 3)
        bg = (1.0, 1.0, 1.0) if bg is None else tuple(np.clip(bg / 255.0, 0, 1).tolist())
        res = _finite(self.max_res.value, 1)
        fps = _finite(self.fps.value, 1)
        util = _finite(self.util.value, 1) if self.util is not None else None
        return {"mode": mode, "bg": bg, "crop": self.crop(),
                "max_res": int(np.clip(res[0], 32, 4096)) if res is not None else 512,
                "fps": float(np.clip(fps[0], 0.5, 60)) if fps is not None else 10.0,
                "train_util": float(np.clip(util[0], 0.05, 0.99)) if util is not None else 0.85}

    def crop(self):
        if self.crop_on.value is not True:
            return None
        lo, hi = _finite(self.crop_min.value, 3), _finite(self.crop_max.value, 3)
        if lo is None or hi is None or not (lo < hi).all():
            self.warn("crop", "crop box ignored: needs finite Min < Max on every axis")
            return None
        return torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)

    def paused(self) -> bool:
        return self.pause is not None and self.pause.value is True

    def _changed(self) -> None:
        box = self.crop()
        self.crop_box.visible = box is not None
        if box is not None:
            self.crop_box.points = box_edges(*(b.double().numpy() for b in box))
        self.app.changed()

    # ---------------------------------------------------------------- status text
    def set_stats(self, size, seconds: float, rays_per_s: float, still: bool) -> None:
        now = time.monotonic()
        if still or now - self._last_stats > 0.5:
            self._last_stats = now
            self.stats.content = (f"{size[0]}x{size[1]} in {seconds * 1000:.0f} ms · "
                                  f"{rays_per_s / 1e3:.0f}k rays/s · {'cached' if self.app.cache else 'exact'}")

    def set_progress(self, step, steps, loss, psnr, seconds) -> None:
        if self.progress is None:
            return
        if step is None:
            self.progress.content = "**training finished**"
        else:
            self.progress.content = (f"step **{step}**/{steps} · loss {loss:.4f} · PSNR {psnr:.2f} dB · "
                                     f"{seconds:.0f} s{' · paused' if self.paused() else ''}")

    # ---------------------------------------------------------------- training frusta
    def show_cameras(self, cams) -> None:
        """cams: (c2w [N, 4, 4] OpenGL, fov_y deg [N], aspect, thumbnails [N, h, w, 3] uint8 or None) or None."""
        if cams is None:
            return
        c2w, fov, aspect, thumbs = cams
        up = c2w[:, :3, 1].mean(0)
        if np.linalg.norm(up) > 0.5:  # the cameras agree on an up direction: orbit around it
            self.server.scene.set_up_direction(tuple(up / np.linalg.norm(up)))
        spread = np.linalg.norm(c2w[:, :3, 3] - c2w[:, :3, 3].mean(0), axis=-1).mean()
        scale = 0.06 * max(float(spread), self.app.radius)
        for i in range(len(c2w)):
            wxyz, pos = vr.viser_from_c2w(c2w[i])
            self.frusta.append(self.server.scene.add_camera_frustum(
                f"/cameras/{i:04d}", fov=math.radians(float(fov[i])), aspect=float(aspect), scale=scale,
                color=(60, 110, 200), image=None if thumbs is None else thumbs[i], wxyz=wxyz, position=pos,
                visible=bool(self.show_cams.value)))

    def show_lines(self, segments: np.ndarray, name: str = "/wireframe"):
        """segments [N, 2, 3] in the field's coordinates (e.g. an ``nfkit wireframe`` result) drawn as orange
        lines over the rendering."""
        thickness = 0.004 * self.app.radius
        return self.server.scene.add_line_segments(name, np.asarray(segments, np.float32), (255, 140, 0),
                                                   thickness=thickness)

    def _toggle_cameras(self) -> None:
        for f in self.frusta:
            f.visible = self.show_cams.value is True

    # ---------------------------------------------------------------- camera path
    def path(self) -> cp.CameraPath:
        size = _finite(self.path_size.value, 2)
        w, h = (640, 360) if size is None else (int(np.clip(size[0], 16, 4096)), int(np.clip(size[1], 16, 4096)))
        sec, fps = _finite(self.path_seconds.value, 1), _finite(self.path_fps.value, 1)
        return cp.CameraPath([k.copy() for k in self.app.keyframes], self.path_fov, w, h,
                             float(np.clip(fps[0], 1, 120)) if fps is not None else 24.0,
                             float(np.clip(sec[0], 0.1, 600)) if sec is not None else 4.0)

    def _add_keyframe(self, client) -> None:
        state = None if client is None else camera_state(client.camera)
        if state is None:
            self.warn("keyframe", "keyframe ignored: no valid camera")
            return
        self.app.keyframes.append(state[0])
        self.path_fov = float(state[1])
        self._draw_path()

    def _clear(self) -> None:
        self.app.keyframes.clear()
        self._draw_path()

    def _draw_path(self) -> None:
        scene, kfs = self.server.scene, list(self.app.keyframes)
        for node in self.path_nodes:
            node.remove()
        self.path_nodes = []
        path = self.path()
        for i, k in enumerate(kfs):
            wxyz, pos = vr.viser_from_c2w(k)
            self.path_nodes.append(scene.add_camera_frustum(
                f"/path/kf{i:03d}", fov=math.radians(self.path_fov), aspect=path.width / path.height,
                scale=0.05 * self.app.radius,
                color=(230, 60, 60), wxyz=wxyz, position=pos))
        if len(kfs) > 1:
            pts = cp.interpolate(path, 20 * len(kfs))[:, :3, 3]
            self.path_nodes.append(scene.add_line_segments("/path/curve", np.stack([pts[:-1], pts[1:]], 1),
                                                           (230, 60, 60)))
        self.path_status.content = f"{len(kfs)} keyframe{'s' * (len(kfs) != 1)}"

    def _preview(self, client) -> None:
        if client is None or not self.app.keyframes:
            return
        path = self.path()
        client.camera.fov = math.radians(path.fov_deg)
        for c2w in cp.interpolate(path, max(2, int(path.seconds * min(path.fps, 30)))):
            wxyz, pos = vr.viser_from_c2w(c2w)
            with client.atomic():
                client.camera.wxyz, client.camera.position = wxyz, pos
            time.sleep(1 / min(path.fps, 30))

    def output_file(self, name: str, ext: str) -> Path:
        """A GUI-given file name -> path inside ``out_dir``; only ``[A-Za-z0-9_.-]+`` names with ``ext``."""
        name = str(name).strip()
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}", name) or not name.endswith(ext):
            raise NfkitError(f"file name {name!r}: use letters, digits, '_', '-', '.' only, ending in {ext}")
        return self.app.out_dir / name

    def _save(self) -> None:
        try:
            if not self.app.keyframes:
                raise NfkitError("add a keyframe first")
            out = cp.save_path(self.output_file(self.path_name.value, ".json"), self.path())
            self.path_status.content = f"saved {out}"
        except (NfkitError, OSError) as e:
            self.path_status.content = f"not saved: {e}"

    def _render_video(self) -> None:
        if not self._busy.acquire(blocking=False):
            return
        try:
            if not self.app.keyframes:
                raise NfkitError("add a keyframe first")
            out, s = self.output_file(self.video_name.value, ".mp4"), self.settings()

            def on_frame(i, n):
                self.path_status.content = f"rendering {i}/{n} -> {out.name}"

            app = self.app
            cp.render_video((app.field, app.grid, app.opts), self.path(), out, s["mode"], s["bg"], progress=False,
                            should_stop=lambda: app.stopping, on_frame=on_frame,
                            frame_lock=lambda: _Both(app.render_lock, app.gate))
            self.path_status.content = f"wrote {out}"
        except (NfkitError, OSError) as e:
            self.path_status.content = f"not rendered: {e}"
        finally:
            self._busy.release()


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
        _log().warning(f"no camera frusta: {e}")
        return None
    norm = (meta.get("normalization") or {}).get("transform")
    if norm is not None and not np.allclose(np.asarray(norm), data.transform.numpy(), atol=1e-5):
        _log().warning(f"no camera frusta: {src} no longer matches the field's normalisation")
        return None
    return cameras_of(data, max_cams)


def wireframe_segments(path, normalization: dict | None) -> np.ndarray:
    """The edges of a ``wireframe.json`` (junctions in input coordinates) as segments [N, 2, 3] in the field's
    coordinates; NfkitError naming the file when it is not one."""
    import json

    from nfkit.export import to_field_coords

    try:
        d = json.loads(Path(path).read_text())
        junctions = np.asarray(d["junctions"], float).reshape(-1, 3)
        edges = np.asarray(d["lines"], int).reshape(-1, 2)
        if len(edges) and (edges.min() < 0 or edges.max() >= len(junctions)):
            raise ValueError("an edge names a junction that does not exist")
    except FileNotFoundError:
        raise NfkitError(f"--lines {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NfkitError(f"--lines {path}: not a wireframe.json with junctions and lines ({str(e)[:80]})") from None
    return to_field_coords(junctions, normalization)[edges]


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


class _Both:
    """``with _Both(a, b):`` enters a then b (the render lock, then the training gate)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __enter__(self):
        self.a.__enter__()
        self.b.__enter__()

    def __exit__(self, *exc):
        self.b.__exit__(*exc)
        self.a.__exit__(*exc)


def build(app, max_res: int, target_fps: float, train_cameras=None) -> ViewerGui:
    g = ViewerGui(app, max_res, target_fps)
    if train_cameras is not None:
        g.show_cameras(train_cameras)
    return g
