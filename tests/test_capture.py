"""nfkit.datasets.video / colmap / capture: frame selection, COLMAP -> transforms.json, bad captured input.

Videos are synthetic (written by the test with imageio's ffmpeg writer).  Tests that run COLMAP skip when
pycolmap is not installed; frame selection skips without PyAV (both are in the ``capture`` extra).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfkit.errors import NfkitError

try:
    import av
except ImportError:
    av = None
try:
    import pycolmap
except ImportError:
    pycolmap = None

needs_av = pytest.mark.skipif(av is None, reason="PyAV not installed (pip install av, or nfkit[capture])")
needs_colmap = pytest.mark.skipif(pycolmap is None or av is None,
                                  reason="pycolmap/PyAV not installed (pip install pycolmap==4.2.1 av)")
RNG = np.random.default_rng(0)


def texture(h: int, w: int, cell: int = 4) -> np.ndarray:
    """[h, w, 3] uint8 random blocks (survives video compression, gives SIFT corners)."""
    small = RNG.integers(0, 256, size=(h // cell + 2, w // cell + 2, 3))
    return np.kron(small, np.ones((cell, cell, 1)))[:h, :w].astype(np.uint8)


def box_blur(img: np.ndarray, k: int = 7) -> np.ndarray:
    """Box filter of size k (edge padding). img: [H, W, 3] uint8."""
    p = k // 2
    x = np.pad(img.astype(np.float64), ((p, p), (p, p), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0), (0, 0))), 0), 1)
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return np.round(s / (k * k)).astype(np.uint8)


def write_video(path: Path, frames, fps: int = 10) -> Path:
    with iio2.get_writer(path, fps=fps, codec="libx264", quality=10, macro_block_size=16) as w:
        for f in frames:
            w.append_data(f)
    return path


# ----------------------------------------------------------------------------------------------- frames
@needs_av
def test_select_frames_picks_the_sharp_frame_of_each_window(tmp_path):
    from nfkit.datasets.video import select_frames

    base = texture(96 + 40, 128 + 40)
    frames, sharp = [], []
    for w in range(6):  # 6 windows of 3 frames; one sharp frame per window, at a varying position
        for j in range(3):
            i = 3 * w + j
            f = base[i:i + 96, 2 * i:2 * i + 128]  # the camera pans slowly
            frames.append(f if j == w % 3 else box_blur(f))
        sharp.append(3 * w + w % 3)
    path = write_video(tmp_path / "pan.mp4", frames)
    sel = select_frames(path, n_frames=6, max_side=None)
    assert sel.n_total == 18 and sel.indices == sharp
    assert all(f.shape == (96, 128, 3) and f.dtype == np.uint8 for f in sel.frames)
    blurred = np.delete(sel.all_scores, sharp)
    assert min(sel.scores) > 2 * blurred.max()
    small = select_frames(path, n_frames=40, max_side=64)  # more windows than frames: every frame, downscaled
    assert small.indices == list(range(18)) and small.frames[0].shape == (48, 64, 3)


@needs_av
@pytest.mark.parametrize("content, message", [(b"", "empty (0 bytes)"),
                                              (b"this is a text file, not a video\n" * 20, "not a readable video")])
def test_select_frames_rejects_non_videos(tmp_path, content, message):
    from nfkit.datasets.video import select_frames

    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(NfkitError, match=re.escape(message)) as e:
        select_frames(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# -------------------------------------------------------------------------------- COLMAP -> transforms
def quat_wxyz(r: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion (w, x, y, z)."""
    w = math.sqrt(max(0.0, 1.0 + np.trace(r))) / 2.0
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def cv_look_at(pos, target) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R [3, 3], t [3]) of an OpenCV camera (x right, y down, z forward) at pos, looking at
    target, with world -y as up (COLMAP's usual orientation)."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    z = (target - pos) / np.linalg.norm(target - pos)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])  # rows: camera axes in world
    return r, -r @ pos


def write_text_model(root: Path, w=64, h=48, n=4) -> np.ndarray:
    """A COLMAP text model in root/sparse/0 and images in root/images -> the 3D points [P, 3]."""
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "sparse" / "0" / "cameras.txt").write_text(
        f"# Camera list\n1 OPENCV {w} {h} 70.0 66.0 30.5 25.25 0.05 -0.02 0.003 -0.002\n")
    lines = []
    for i in range(n):
        a = 2 * math.pi * i / n + 0.3
        r, t = cv_look_at([3 * math.cos(a), -1.0 - 0.2 * i, 3 * math.sin(a)], [0.1, 0.2, -0.1])
        q = quat_wxyz(r)
        lines += [f"{i + 1} {' '.join(f'{v:.17g}' for v in (*q, *t))} 1 view_{i}.png", ""]
        iio.imwrite(root / "images" / f"view_{i}.png", texture(h, w))
    (root / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")
    pts = RNG.uniform(-0.5, 0.5, size=(20, 3))
    (root / "sparse" / "0" / "points3D.txt").write_text(
        "".join(f"{k + 1} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g} 200 100 50 0.5\n" for k, p in enumerate(pts)))
    return pts


@needs_colmap
def test_colmap_model_to_transforms_keeps_the_projection(tmp_path):
    from nfkit.datasets import load_dataset
    from nfkit.datasets.capture import detect_input, prepare_capture
    from nfkit.renderers.cameras import project

    pts = write_text_model(tmp_path / "scene")
    assert detect_input(tmp_path / "scene")[0] == "colmap"
    out = prepare_capture(tmp_path / "scene", tmp_path / "out", log=lambda *a: None)
    meta = json.loads(out.read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (64, 48)
    assert [meta[k] for k in ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2")] == \
        pytest.approx([70.0, 66.0, 30.5, 25.25, 0.05, -0.02, 0.003, -0.002])
    a = np.asarray(meta["applied_transform"])
    assert a.shape == (3, 4) and np.allclose(a[:, :3] @ a[:, :3].T, np.eye(3))
    ply = (out.parent / meta["ply_file_path"]).read_bytes()
    assert ply.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 20\n")
    saved = pts @ a[:, :3].T + a[:, 3]
    lo, hi = np.asarray(meta["nfkit_points_bounds"])
    assert np.all(lo >= saved.min(0) - 1e-9) and np.all(hi <= saved.max(0) + 1e-9)

    rec = pycolmap.Reconstruction(str(tmp_path / "scene" / "sparse" / "0"))
    data = load_dataset(out, "all")
    assert data.names == [f"images/view_{i}.png" for i in range(4)]  # OUT/images links to scene/images
    x = torch.as_tensor(saved, dtype=torch.float64)
    x_n = (x @ data.transform[:3, :3].T + data.transform[:3, 3]).float()
    for i, name in enumerate(data.names):
        im = rec.find_image_with_name(Path(name).name)
        m = im.cam_from_world().matrix()
        expected = rec.cameras[im.camera_id].img_from_cam(pts @ m[:, :3].T + m[:, 3])  # COLMAP's projection
        got = project(data.cameras, i, x_n).numpy()
        assert np.abs(got - expected).max() < 2e-3, name


def test_prepare_capture_returns_an_existing_transforms_json(tmp_path):
    from nfkit.datasets.capture import prepare_capture

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "transforms.json").write_text('{"frames": []}')
    assert prepare_capture(tmp_path / "ds", tmp_path / "out", log=lambda *a: None) == tmp_path / "ds" / "transforms.json"
    (tmp_path / "lego").mkdir()
    (tmp_path / "lego" / "transforms_train.json").write_text('{"frames": []}')
    assert prepare_capture(tmp_path / "lego", tmp_path / "out", log=lambda *a: None) == tmp_path / "lego"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ bad input
def run_cli(fn, capsys) -> tuple[int, str]:
    """Runs ``fn`` the way ``nfkit`` does (NfkitError -> one stderr line, exit code 2)."""
    from nfkit.apps.cli import guarded

    code = guarded(fn)
    return code, capsys.readouterr().err


def assert_no_results(out: Path):
    assert not (out / "transforms.json").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("name, content, message", [
    ("notes.mp4", b"this is a text file, not a video\n" * 20, "not a readable video"),
    ("empty.mp4", b"", "empty (0 bytes)"),
    ("notes.txt", b"hello\n", "unknown input kind"),
])
def test_bad_files_give_one_line_and_exit_code_2(tmp_path, capsys, name, content, message):
    from nfkit.datasets.capture import prepare_capture

    if name.endswith(".mp4") and (av is None or pycolmap is None):
        pytest.skip("pycolmap/PyAV not installed (pip install pycolmap==4.2.1 av)")
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_cli(lambda: prepare_capture(path, tmp_path / "out", log=lambda *a: None), capsys)
    assert code == 2 and message in err and str(path) in err and err.count("\n") == 1
    assert_no_results(tmp_path / "out")


def test_unknown_folder_names_the_accepted_kinds(tmp_path, capsys):
    from nfkit.datasets.capture import prepare_capture

    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("nothing to see")
    code, err = run_cli(lambda: prepare_capture(tmp_path / "stuff", tmp_path / "out"), capsys)
    assert code == 2 and "holds no images, transforms.json or COLMAP model" in err
    assert "a video file" in err and "COLMAP model folder" in err and err.count("\n") == 1
    code, err = run_cli(lambda: prepare_capture(tmp_path / "missing", tmp_path / "out"), capsys)
    assert code == 2 and "not found" in err


@needs_colmap
@pytest.mark.parametrize("kind", ["static", "textureless"])
def test_unposable_video_gives_advice_and_no_transforms(tmp_path, capsys, kind):
    from nfkit.datasets.capture import prepare_capture

    if kind == "static":  # a tripod shot: the same textured view, with sensor noise
        base = texture(96, 128).astype(np.int16)
        frames = [np.clip(base + RNG.integers(-3, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    else:  # a blank wall, panning
        ramp = np.linspace(100, 140, 128 + 24)
        frames = [np.broadcast_to(ramp[2 * i:2 * i + 128, None], (128, 3))[None].repeat(96, 0).astype(np.uint8)
                  for i in range(12)]
    video = write_video(tmp_path / f"{kind}.mp4", frames)
    out = tmp_path / "out"
    code, err = run_cli(lambda: prepare_capture(video, out, n_frames=6, log=lambda *a: None), capsys)
    assert code == 2 and err.count("\n") == 1 and str(video) in err
    assert "could not be recovered" in err or "could be registered" in err
    assert "film more slowly" in err and "--frames 12" in err
    assert_no_results(out)
    report = json.loads((out / "poses.json").read_text())
    assert report["ok"] is False and report["n_chosen"] == 6 and "film more slowly" in report["error"]


def test_too_few_registered_frames_message():
    from nfkit.datasets.capture import _failure_advice

    msg = _failure_advice("video", Path("clip.mp4"), 2, 40, 400)
    assert msg.startswith("clip.mp4: only 2 of 40 frames could be registered: film more slowly")
    assert msg.endswith("or pass --frames 80") and "\n" not in msg
    assert "--frames" not in _failure_advice("video", Path("clip.mp4"), 0, 40, 40)  # every frame was used


def test_image_folder_detection_order_and_foreign_output_folder(tmp_path, capsys):
    from nfkit.datasets.capture import detect_input, list_images, prepare_capture

    for name in ("frame10.png", "frame2.png", "Frame1.jpg", "notes.txt"):
        (tmp_path / "shots").mkdir(exist_ok=True)
        (tmp_path / "shots" / name).write_bytes(b"x")
    assert detect_input(tmp_path / "shots") == ("images", tmp_path / "shots")
    assert [p.name for p in list_images(tmp_path / "shots")] == ["Frame1.jpg", "frame2.png", "frame10.png"]
    (tmp_path / "out" / "images").mkdir(parents=True)  # someone else's images: never overwritten
    if pycolmap is None:
        pytest.skip("pycolmap not installed (pip install pycolmap==4.2.1)")
    code, err = run_cli(lambda: prepare_capture(tmp_path / "shots", tmp_path / "out"), capsys)
    assert code == 2 and "not written by nfkit" in err
