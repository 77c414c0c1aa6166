"""nfkit.datasets: format detection, intrinsics, splits, normalisation, downscaling and error messages.

Synthetic datasets are written into ``tmp_path``; one test reads the real Blender-format lego scene from the
shared data folder (``<repo>/../shared/data`` or ``$NFKIT_SHARED_DATA``) and skips when it is absent.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfkit.datasets import SceneData, composite, load_dataset, unnormalize_points
from nfkit.errors import DatasetError

SHARED_DATA = Path(os.environ.get("NFKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RNG = np.random.default_rng(0)


def look_at(pos, target) -> list[list[float]]:
    """4x4 OpenGL camera-to-world at ``pos`` looking at ``target`` (+Z world up), as nested lists."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    z = pos - target
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, np.cross(z, x), z, pos
    return m.tolist()


def ring(n, centre=(0.0, 0.0, 0.0), radius=2.0):
    """n camera poses on a tilted ring around ``centre``, all looking at it."""
    c = np.asarray(centre, float)
    return [look_at(c + radius * np.array([math.cos(a), math.sin(a), 0.5]) / math.sqrt(1.25), c)
            for a in np.linspace(0, 2 * math.pi, n, endpoint=False)]


def write_image(path: Path, h=6, w=8, c=4, dtype=np.uint8) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    hi = np.iinfo(dtype).max
    shape = (h, w) if c == 1 else (h, w, c)
    img = RNG.integers(0, hi, size=shape, endpoint=True).astype(dtype)
    iio.imwrite(path, img)
    return img


def write_json(path: Path, meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta))
    return path


def make_blender(root: Path, splits=("train", "val", "test"), n=3, h=6, w=8, **top) -> Path:
    for s in splits:
        frames = []
        for i, m in enumerate(ring(n)):
            write_image(root / s / f"r_{i}.png", h, w)
            frames.append({"file_path": f"./{s}/r_{i}", "transform_matrix": m})
        write_json(root / f"transforms_{s}.json", {"camera_angle_x": 0.7, **top, "frames": frames})
    return root


def make_ns(root: Path, n=10, h=6, w=8, c=3, dtype=np.uint8, centre=(0.0, 0.0, 0.0), frame_extra=None,
            **top) -> Path:
    frames = []
    for i, m in enumerate(ring(n, centre)):
        write_image(root / "images" / f"f{i:02d}.png", h, w, c, dtype)
        f = {"file_path": f"images/f{i:02d}.png", "transform_matrix": m}
        f.update(frame_extra(i) if frame_extra else {})
        frames.append(f)
    return write_json(root / "transforms.json", {**top, "frames": frames})


# ---------------------------------------------------------------------------------------------- Blender


def test_blender_intrinsics_images_and_conventions(tmp_path):
    root = make_blender(tmp_path / "syn")
    d = load_dataset(root, "train")
    assert isinstance(d, SceneData) and d.images.shape == (3, 6, 8, 4) and d.images.dtype == torch.float32
    assert d.names == ["train/r_0.png", "train/r_1.png", "train/r_2.png"]
    ref = iio.imread(root / "train" / "r_1.png").astype(np.float32) / 255
    assert torch.allclose(d.images[1], torch.from_numpy(ref))
    fx = 0.5 * 8 / math.tan(0.35)
    cams = d.cameras
    assert (cams.width, cams.height) == (8, 6) and cams.dist is None
    assert torch.allclose(cams.fx, torch.full((3,), fx)) and torch.allclose(cams.fy, cams.fx)
    assert torch.allclose(cams.cx, torch.full((3,), 4.0)) and torch.allclose(cams.cy, torch.full((3,), 3.0))
    assert torch.equal(d.transform, torch.eye(4, dtype=d.transform.dtype)) and d.scale == 1.0
    assert torch.allclose(d.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert torch.allclose(cams.c2w[0].double(), torch.tensor(ring(3)[0], dtype=torch.float64), atol=1e-6)
    assert d.source == str(root / "transforms_train.json")


def test_blender_camera_angle_y_val_fallback_and_file_path(tmp_path):
    root = make_blender(tmp_path / "syn", splits=("train", "test"), camera_angle_y=0.5)
    d = load_dataset(root, "val")  # no transforms_val.json -> the test split
    assert d.source.endswith("transforms_test.json") and d.names[0] == "test/r_0.png"
    assert torch.allclose(d.cameras.fy, torch.full((3,), 0.5 * 6 / math.tan(0.25)))
    assert len(load_dataset(root / "transforms_train.json", "train")) == 3
    with pytest.raises(DatasetError, match="transforms_train.json"):
        load_dataset(root / "transforms_train.json", "test")


# ------------------------------------------------------------------------------------- nerfstudio / ngp


def test_ns_top_level_intrinsics_and_distortion(tmp_path):
    path = make_ns(tmp_path, camera_model="OPENCV", fl_x=10.0, fl_y=11.0, cx=3.5, cy=2.5, w=8, h=6,
                   k1=0.1, p2=0.02)
    d = load_dataset(tmp_path, "all")
    assert d.images.shape == (10, 6, 8, 3) and d.source == str(path)
    c = d.cameras
    assert torch.allclose(c.fx, torch.full((10,), 10.0)) and torch.allclose(c.fy, torch.full((10,), 11.0))
    assert torch.allclose(c.cx, torch.full((10,), 3.5)) and torch.allclose(c.cy, torch.full((10,), 2.5))
    assert torch.allclose(c.dist, torch.tensor([[0.1, 0.0, 0.0, 0.02, 0.0]]).expand(10, 5))


def test_ns_per_frame_intrinsics_defaults_and_distortion_params(tmp_path):
    path = make_ns(tmp_path, frame_extra=lambda i: {"fl_x": 5.0 + i, "distortion_params": [0.1, 0.2, 0.3, 0, 0.01, 0.02]},
                   camera_model="PINHOLE")
    d = load_dataset(path, "all")
    c = d.cameras
    assert torch.allclose(c.fx, 5.0 + torch.arange(10.0)) and torch.allclose(c.fy, c.fx)  # fl_y defaults to fl_x
    assert torch.allclose(c.cx, torch.full((10,), 4.0)) and torch.allclose(c.cy, torch.full((10,), 3.0))
    assert torch.allclose(c.dist[0], torch.tensor([0.1, 0.2, 0.01, 0.02, 0.3]))  # nerfstudio order -> OpenCV
    make_ns(tmp_path / "fov", n=2, camera_angle_x=1.0)  # camera_angle_x fallback
    assert torch.allclose(load_dataset(tmp_path / "fov", "all").cameras.fx, torch.full((2,), 4 / math.tan(0.5)))


def test_ns_split_rule(tmp_path):
    make_ns(tmp_path, n=10, fl_x=10.0)
    tr, te, va = (load_dataset(tmp_path, s) for s in ("train", "test", "val"))
    assert te.names == va.names == ["images/f00.png", "images/f08.png"]
    assert tr.names == [f"images/f{i:02d}.png" for i in (1, 2, 3, 4, 5, 6, 7, 9)]
    assert torch.equal(tr.transform, te.transform) and tr.scale == te.scale  # one normalisation for all splits
    with pytest.raises(DatasetError, match="bogus"):
        load_dataset(tmp_path, "bogus")


def test_ns_normalisation_and_round_trip(tmp_path):
    centre = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    make_ns(tmp_path, n=10, fl_x=10.0, centre=centre.tolist())
    d = load_dataset(tmp_path, "all")
    t = d.cameras.c2w[:, :3, 3].double()
    assert torch.allclose(t.norm(dim=-1).mean(), torch.tensor(4.0, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(d.transform[:3, :3] @ centre + d.transform[:3, 3], torch.zeros(3, dtype=torch.float64),
                          atol=1e-9)  # the focus point (where all cameras look) becomes the origin
    assert d.scale == pytest.approx(2.0)  # ring radius 2 -> 4
    inputs = torch.tensor([r for r in ring(10, centre.tolist())], dtype=torch.float64)[:, :3, 3]
    assert torch.allclose(inputs @ d.transform[:3, :3].T + d.transform[:3, 3], t, atol=1e-5)
    assert torch.allclose(unnormalize_points(t, d), inputs, atol=1e-5)
    assert torch.allclose(unnormalize_points(torch.zeros(1, 3), d), centre.float()[None], atol=1e-5)
    assert torch.allclose(d.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert torch.allclose(d.cameras.c2w[:, :3, :3].double(), torch.tensor(ring(10), dtype=torch.float64)[:, :3, :3],
                          atol=1e-6)


def test_ngp_aabb_scale_keeps_coordinates(tmp_path):
    make_ns(tmp_path, n=3, fl_x=10.0, aabb_scale=4, centre=(1.0, 1.0, 1.0))
    d = load_dataset(tmp_path / "transforms.json", "all")
    assert torch.equal(d.transform, torch.eye(4, dtype=d.transform.dtype)) and d.scale == 1.0
    assert torch.allclose(d.aabb, torch.tensor([[-6.0] * 3, [6.0] * 3]))
    assert torch.allclose(d.cameras.c2w.double(), torch.tensor(ring(3, (1.0, 1.0, 1.0)), dtype=torch.float64),
                          atol=1e-6)


def test_max_side_downscale_uint16_and_greyscale(tmp_path):
    make_ns(tmp_path / "a", n=2, h=12, w=16, c=1, dtype=np.uint16, fl_x=20.0, cx=7.0, cy=6.0)
    full = load_dataset(tmp_path / "a", "all")
    assert full.images.shape == (2, 12, 16, 3) and float(full.images.max()) <= 1.0
    small = load_dataset(tmp_path / "a", "all", max_side=8)
    assert small.images.shape == (2, 6, 8, 3)
    assert (small.cameras.width, small.cameras.height) == (8, 6)
    assert torch.allclose(small.cameras.fx, torch.full((2,), 10.0))
    assert torch.allclose(small.cameras.cx, torch.full((2,), 3.5)) and torch.allclose(small.cameras.cy, torch.full((2,), 3.0))
    box = full.images.reshape(2, 6, 2, 8, 2, 3).mean((2, 4))  # exact 2x2 area averaging
    assert torch.allclose(small.images, box, atol=1e-6)
    odd = load_dataset(tmp_path / "a", "all", max_side=10)  # non-integer factor 10/16
    assert odd.images.shape == (2, 8, 10, 3) and torch.allclose(odd.cameras.fx, torch.full((2,), 12.5))
    assert load_dataset(tmp_path / "a", "all", max_side=64).images.shape == (2, 12, 16, 3)


def test_composite():
    rgba = torch.tensor([[0.2, 0.4, 0.6, 0.5], [1.0, 1.0, 1.0, 0.0]])
    out = composite(rgba, torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.7, 0.8], [1.0, 1.0, 1.0]]))
    rgb = torch.rand(2, 3, 3)
    assert composite(rgb, torch.zeros(3)) is rgb


# ----------------------------------------------------------------------------------------------- errors


def _frame(i=0, **kw):
    return {"file_path": f"images/f{i:02d}.png", "transform_matrix": ring(1)[0], **kw}


def _bad(tmp_path, case):
    """Builds the broken dataset ``case``; returns (path to load, text the message must contain)."""
    js = tmp_path / "transforms.json"
    if case == "missing_dir":
        return tmp_path / "nowhere", "nowhere"
    if case == "empty_dir":
        return tmp_path, str(tmp_path)
    if case == "missing_json_file":
        return tmp_path / "scene.json", "scene.json"
    if case == "blender_missing_split":
        make_blender(tmp_path, splits=("train",))
        return tmp_path, "transforms_test.json"
    write_image(tmp_path / "images" / "f00.png")
    if case == "bad_json":
        js.write_text('{"fl_x": 10,\n "frames": [}')
        return tmp_path, "line 2, column"
    metas = {
        "no_frames": {"fl_x": 10.0},
        "empty_frames": {"fl_x": 10.0, "frames": []},
        "no_matrix": {"fl_x": 10.0, "frames": [{"file_path": "images/f00.png"}]},
        "no_file_path": {"fl_x": 10.0, "frames": [{"transform_matrix": ring(1)[0]}]},
        "matrix_3x3": {"fl_x": 10.0, "frames": [_frame(), _frame(transform_matrix=np.eye(3).tolist())]},
        "matrix_nan": {"fl_x": 10.0, "frames": [_frame(), _frame(transform_matrix=[[float("nan")] * 4] * 4)]},
        "missing_image": {"fl_x": 10.0, "frames": [_frame(1)] * 2},
        "unreadable_image": {"fl_x": 10.0, "frames": [_frame(2)] * 2},
        "no_intrinsics": {"frames": [_frame()] * 2},
        "fisheye": {"fl_x": 10.0, "camera_model": "OPENCV_FISHEYE", "frames": [_frame()] * 2},
        "size_mismatch": {"fl_x": 10.0, "frames": [_frame(0), _frame(3)]},
        "declared_size": {"fl_x": 10.0, "w": 16, "h": 6, "frames": [_frame()] * 2},
    }
    expect = {"matrix_3x3": "frame 1", "matrix_nan": "frame 1", "missing_image": "f01.png",
              "unreadable_image": "f02.png", "size_mismatch": "f03.png", "declared_size": "f00.png", "fisheye": "unsupported camera_model"}
    if case == "unreadable_image":
        (tmp_path / "images" / "f02.png").write_bytes(b"not a png at all")
    if case == "size_mismatch":
        write_image(tmp_path / "images" / "f03.png", h=5, w=8)
    write_json(js, metas[case])
    return js, expect.get(case, "transforms.json")


ERROR_CASES = ["missing_dir", "empty_dir", "missing_json_file", "blender_missing_split", "bad_json", "no_frames",
               "empty_frames", "no_matrix", "no_file_path", "matrix_3x3", "matrix_nan", "missing_image",
               "unreadable_image", "no_intrinsics", "fisheye", "size_mismatch", "declared_size"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_are_dataset_errors_naming_the_file(tmp_path, case):
    path, needle = _bad(tmp_path, case)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, "test" if case == "blender_missing_split" else "all")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg, msg
    if case in ("missing_image", "unreadable_image", "matrix_nan"):
        assert "transforms.json" in msg  # names the json the frame came from too


# -------------------------------------------------------------------------------------------- real data


def test_real_lego_100():
    root = SHARED_DATA / "lego" / "100"
    if not (root / "transforms_train.json").is_file():
        pytest.skip(f"../shared/data/lego not present ({root}; set NFKIT_SHARED_DATA to the shared data folder)")
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    assert len(train) == 70 and len(test) == 20
    assert train.images.shape == (70, 100, 100, 4) and test.images.shape == (20, 100, 100, 4)
    assert torch.allclose(train.cameras.fx, torch.full((70,), 138.889), atol=1e-3)
    assert torch.allclose(train.cameras.cx, torch.full((70,), 50.0))
    r = train.cameras.c2w[:, :3, 3].norm(dim=-1)
    assert torch.allclose(r, torch.full_like(r, 4.031), atol=0.01)  # Blender input coordinates are kept
