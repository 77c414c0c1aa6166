"""Readers beyond transforms.json: IDR / DTU / NEAT ``cameras.npz``, LLFF ``poses_bounds.npy``, Middlebury
``*_par.txt``, per-image masks.  Synthetic datasets are written into ``tmp_path`` from known cameras, and every
reader must put a known world point on the pixel that the file's own projection gives (OpenCV pixel centres at
integers, nfkit's at +0.5).  The temple and abc tests read ../shared/data and skip without it."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfkit.cameras import project
from nfkit.datasets import load_dataset
from nfkit.datasets.idr import decompose_projection
from nfkit.datasets.masks import threshold_mask
from nfkit.errors import DatasetError

SHARED_DATA = Path(os.environ.get("NFKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
H, W = 12, 16
K = np.array([[20.0, 0.0, 7.3], [0.0, 21.0, 5.6], [0.0, 0.0, 1.0]])
WORLD_CENTRE = np.array([0.4, -0.3, 2.0])


def w2c_cv(n: int, radius: float = 3.0) -> np.ndarray:
    """[n, 4, 4] OpenCV world -> camera of cameras on a ring around WORLD_CENTRE looking at it."""
    out = []
    for a in np.linspace(0, 2 * math.pi, n, endpoint=False):
        eye = WORLD_CENTRE + radius * np.array([math.cos(a), math.sin(a), 0.4])
        z = WORLD_CENTRE - eye
        z /= np.linalg.norm(z)  # OpenCV: +z forward
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        r = np.stack([x, y, z])
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = r, -r @ eye
        out.append(m)
    return np.stack(out)


def cv_pixel(w2c: np.ndarray, k: np.ndarray, x: np.ndarray) -> np.ndarray:
    p = k @ (w2c[:3, :3] @ x + w2c[:3, 3])
    return p[:2] / p[2]


def write_images(folder: Path, names, value=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        img = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8) if value is None else value
        iio.imwrite(folder / n, img)


def assert_projects(data, w2c, k, idx):
    """The file's projection of a world point, + 0.5, equals nfkit's projection of the normalised point."""
    x = WORLD_CENTRE + np.array([0.1, 0.2, -0.15])
    xn = data.transform[:3, :3].numpy() @ x + data.transform[:3, 3].numpy()
    for j, i in enumerate(idx):
        uv = project(data.cameras, j, torch.tensor(xn[None], dtype=torch.float32))[0].numpy()
        assert np.allclose(uv, cv_pixel(w2c[i], k, x) + 0.5, atol=2e-3), (uv, cv_pixel(w2c[i], k, x))


def test_decompose_projection_recovers_k_r_and_the_centre():
    w2c = w2c_cv(3)[1]
    p = -2.5 * (K @ w2c[:3])  # any scale, even negative
    k, r, c = decompose_projection(p)
    assert np.allclose(k, K) and np.allclose(r, w2c[:3, :3])
    assert np.allclose(c, -w2c[:3, :3].T @ w2c[:3, 3])
    with pytest.raises(DatasetError, match="singular"):
        decompose_projection(np.zeros((3, 4)))


def test_idr_cameras_npz_with_scale_mat_and_masks(tmp_path):
    n = 9
    w2c = w2c_cv(n)
    scale_mat = np.eye(4)
    scale_mat[:3, :3] *= 1.7
    scale_mat[:3, 3] = WORLD_CENTRE
    k4 = np.eye(4)
    k4[:3, :3] = K
    np.savez(tmp_path / "cameras.npz", **{f"world_mat_{i}": k4 @ w2c[i] for i in range(n)},
             **{f"scale_mat_{i}": scale_mat for i in range(n)})
    write_images(tmp_path / "image", [f"{i:06d}.png" for i in range(n)])
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 4:12] = 255
    write_images(tmp_path / "mask", [f"{i:03d}.png" for i in range(n)], mask)  # IDR's DTU names: paired in order
    train = load_dataset(tmp_path, "train")
    idx = [i for i in range(n) if i % 3]  # fewer than 24 images: 3 held out (every ceil(9 / 3) = 3rd)
    assert len(train) == len(idx) and train.images.shape == (len(idx), H, W, 4)
    assert torch.equal(train.images[0, ..., 3], torch.from_numpy(mask / 255.0).float())
    assert np.allclose(train.transform.numpy(), np.linalg.inv(scale_mat)) and train.scale == pytest.approx(1 / 1.7)
    assert torch.allclose(train.cameras.cx, torch.full((len(idx),), 7.8))
    assert_projects(train, w2c, K, idx)
    assert load_dataset(tmp_path / "cameras.npz", "test").names == ["image/000000.png", "image/000003.png",
                                                                    "image/000006.png"]


def test_neat_intrinsics_extrinsics_and_errors(tmp_path):
    n = 4
    w2c = w2c_cv(n)
    np.savez(tmp_path / "cameras.npz", intrinsics=np.repeat(K[None], n, 0), extrinsics=np.linalg.inv(w2c))
    write_images(tmp_path / "images", [f"image_{i:04d}.png" for i in range(n)])
    data = load_dataset(tmp_path, "all")
    assert data.images.shape == (n, H, W, 3)
    assert_projects(data, w2c, K, range(n))
    (tmp_path / "images" / "image_0003.png").unlink()
    with pytest.raises(DatasetError, match="4 cameras but"):
        load_dataset(tmp_path, "all")
    np.savez(tmp_path / "cameras.npz", something=np.eye(3))
    with pytest.raises(DatasetError, match="world_mat_i"):
        load_dataset(tmp_path, "all")


def test_llff_poses_bounds(tmp_path):
    n = 5
    w2c = w2c_cv(n)
    c2w_gl = np.linalg.inv(w2c) @ np.diag([1.0, -1.0, -1.0, 1.0])
    full_h, full_w, f_full = 2 * H, 2 * W, 40.0  # the files are half the size poses_bounds describes
    rows = []
    for m in c2w_gl:
        llff = np.stack([-m[:3, 1], m[:3, 0], m[:3, 2], m[:3, 3], [full_h, full_w, f_full]], 1)  # down, right, back
        rows.append(np.concatenate([llff.reshape(-1), [1.0, 6.0]]))
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows))
    write_images(tmp_path / "images", [f"IMG_{i}.png" for i in range(n)])
    data = load_dataset(tmp_path, "all")
    assert torch.allclose(data.cameras.c2w[:, :3, :3].double(), torch.from_numpy(c2w_gl[:, :3, :3]), atol=1e-6)
    k = np.array([[f_full / 2, 0, W / 2], [0, f_full / 2, H / 2], [0, 0, 1.0]])  # NeRF: cx = W/2, integer centres
    assert_projects(data, w2c, k, range(n))
    assert (data.aabb[0] < 0).all() and (data.aabb[1] > 0).all()
    np.save(tmp_path / "poses_bounds.npy", np.zeros((n, 15)))
    with pytest.raises(DatasetError, match="17"):
        load_dataset(tmp_path, "all")


def test_middlebury_par_file_and_threshold_masks(tmp_path):
    n = 3
    w2c = w2c_cv(n)
    lines = [str(n)]
    img = np.zeros((H, W, 3), np.uint8)
    img[2:10, 5:13] = 200
    for i in range(n):
        vals = [*K.reshape(-1), *w2c[i, :3, :3].reshape(-1), *w2c[i, :3, 3]]
        lines.append(f"obj{i:04d}.png " + " ".join(f"{v:.17g}" for v in vals))
    (tmp_path / "obj_par.txt").write_text("\n".join(lines) + "\n")
    write_images(tmp_path, [f"obj{i:04d}.png" for i in range(n)], img)
    data = load_dataset(tmp_path, "all")
    assert data.images.shape == (n, H, W, 4)
    assert torch.equal(data.images[0, ..., 3] > 0.5, torch.from_numpy(img[..., 0] > 0))
    assert_projects(data, w2c, K, range(n))
    from nfkit.datasets.capture import detect_input

    assert detect_input(tmp_path)[0] == "transforms"  # posed: `nfkit fit` reads it as it is, no COLMAP
    (tmp_path / "obj_par.txt").write_text("2\nobj0000.png 1 2 3\n")
    with pytest.raises(DatasetError, match="says 2 images"):
        load_dataset(tmp_path / "obj_par.txt", "all")


def test_threshold_mask_keeps_gaps_and_fills_specks():
    img = torch.zeros(100, 100, 3)
    img[20:80, 20:40] = 0.8
    img[20:80, 60:80] = 0.8  # two columns ...
    img[20:30, 20:80] = 0.8  # ... joined at the top, with a 20 px wide gap between them
    img[50, 30] = 0.0  # a dark speck on the object
    img[5, 5] = 0.9  # a bright speck on the background
    m = threshold_mask(img)
    assert m[50, 30] and not m[5, 5] and not m[60, 50] and m[25, 50]


def test_unknown_folder_lists_the_formats(tmp_path):
    with pytest.raises(DatasetError, match="poses_bounds.npy"):
        load_dataset(tmp_path)


def test_real_temple_ring():
    root = SHARED_DATA / "temple_ring"
    if not (root / "templeSR_par.txt").is_file():
        pytest.skip(f"needs ../shared/data/temple_ring ({root})")
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    assert len(train) == 13 and len(test) == 3 and train.images.shape[1:] == (480, 640, 4)
    # the README's bounding box, projected, holds the silhouette
    lo, hi = np.array([-0.073568, 0.021728, -0.012445]), np.array([0.028855, 0.181892, 0.062736])
    corners = np.array([[a[0], b[1], c[2]] for a in (lo, hi) for b in (lo, hi) for c in (lo, hi)])
    cn = torch.tensor(corners @ train.transform[:3, :3].numpy().T + train.transform[:3, 3].numpy()).float()
    fractions = []
    for i in range(len(train)):
        uv = project(train.cameras, i, cn)
        a = train.images[i, ..., 3] > 0.5
        v, u = torch.nonzero(a, as_tuple=True)
        inside = (u + 0.5 >= uv[:, 0].min()) & (u + 0.5 <= uv[:, 0].max()) & (v + 0.5 >= uv[:, 1].min()) & (
            v + 0.5 <= uv[:, 1].max())
        assert 0.1 < float(a.float().mean()) < 0.4
        fractions.append(float(inside.float().mean()))
    assert min(fractions) > 0.9 and np.median(fractions) > 0.98, fractions  # a sliver of lit cloth in 2 views


def test_real_abc_cameras_match_the_readme_projection():
    """README: ``x ~ K (R X + t)`` with ``[R|t] = inv(extrinsics[i])[:3]``, pixel centres at integers."""
    root = SHARED_DATA / "abc_wireframe"
    if not (root / "cameras.npz").is_file():
        pytest.skip(f"needs ../shared/data/abc_wireframe ({root})")
    data = load_dataset(root, "test")
    cams = np.load(root / "cameras.npz")
    lines = json.loads((root / "lines.json").read_text())
    x = (np.array(lines["junctions"]) - [5, 7.5, 3]) / 15
    xn = torch.tensor(x @ data.transform[:3, :3].numpy().T + data.transform[:3, 3].numpy()).float()
    for j, i in enumerate(range(0, 100, 8)):
        w2c = np.linalg.inv(cams["extrinsics"][i].astype(np.float64))
        p = cams["intrinsics"][i] @ (w2c[:3, :3] @ x.T + w2c[:3, 3:])
        uv = project(data.cameras, j, xn).numpy()
        assert np.allclose(uv, (p[:2] / p[2]).T + 0.5, atol=0.02)
        u, v = (uv[:, 0]).astype(int).clip(0, 511), (uv[:, 1]).astype(int).clip(0, 511)
        assert float((data.images[j][v, u].amax(-1) > 0.05).float().mean()) > 0.7  # on the object, mostly


def test_holdout_split_keeps_three_views_of_small_sets():
    """Every 8th view is held out, as nerfstudio does; a set of fewer than 24 views holds out 3 (issue 19's temple
    ring: 16 views -> 0, 6, 12)."""
    from nfkit.datasets.posed_images import holdout_split

    assert holdout_split(16, "test", "x") == [0, 6, 12]
    assert holdout_split(16, "train", "x") == [i for i in range(16) if i % 6]
    assert holdout_split(49, "test", "x") == [0, 8, 16, 24, 32, 40, 48]
    assert holdout_split(5, "test", "x") == [0, 2, 4]
