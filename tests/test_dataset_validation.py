"""Bad dataset input (issue 25), one test per class: frames with missing images, non-rigid camera matrices, image
paths leaving the dataset folder, large images (default maximum side), 1-pixel and empty images.  Every refusal
is one line that names the file, and through the CLI's guard it is exit code 2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from nfkit.apps.cli import guarded
from nfkit.datasets import load_dataset
from nfkit.datasets.load import DEFAULT_MAX_SIDE
from nfkit.errors import DatasetError


def pose(a: float) -> list:
    """OpenGL c2w on a ring of radius 3 looking at the origin (+Z up)."""
    eye = np.array([3 * math.cos(a), 3 * math.sin(a), 1.0])
    z = eye / np.linalg.norm(eye)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, np.cross(z, x), z, eye
    return m.tolist()


def make(root: Path, n=10, h=6, w=8, frames=None, write=None) -> Path:
    """A nerfstudio dataset of ``n`` frames; ``write``: indices of the images to write (default all)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n) if write is None else write:
        iio.imwrite(root / "images" / f"f{i:02d}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    frames = frames or [{"file_path": f"images/f{i:02d}.png", "transform_matrix": pose(2 * math.pi * i / n)}
                        for i in range(n)]
    (root / "transforms.json").write_text(json.dumps({"fl_x": 10.0, "frames": frames}))
    return root


def one_line_exit_2(capsys, fn, *needles):
    """``fn`` fails through the CLI guard with exit 2 and one stderr line holding every needle."""
    capsys.readouterr()
    assert guarded(fn) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nfkit: error: "), err
    for n in needles:
        assert n in err, err


def test_frames_with_missing_images_are_skipped_with_one_notice(tmp_path, capsys):
    root = make(tmp_path / "fox", n=10, write=[0, 1, 2, 4, 5, 7, 8])  # 3 of 10 images deleted
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    err = capsys.readouterr().err
    assert err.count("skipping 3 of 10 frames") == 1 and err.count("\n") == 1, err  # said once for both splits
    assert len(train) + len(test) == 7 and "images/f03.png" not in train.names + test.names
    none = make(tmp_path / "empty", n=3, write=[])
    one_line_exit_2(capsys, lambda: load_dataset(none, "all"), "f00.png", "transforms.json", "none of the 3")


@pytest.mark.parametrize("case", ["sheared", "mirrored", "projective", "scaled", "singular"])
def test_non_rigid_camera_matrices_are_refused(tmp_path, capsys, case):
    m = np.array(pose(1.0))
    if case == "sheared":
        m[:3, :3] = m[:3, :3] @ np.array([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]])
    elif case == "mirrored":
        m[:3, 0] *= -1
    elif case == "projective":
        m[3] = [0.0, 0.1, 0.0, 1.0]
    elif case == "scaled":
        m[:3, :3] *= 2.0
    else:
        m[:3, :3] = 0.0
    frames = [{"file_path": f"images/f{i:02d}.png", "transform_matrix": pose(i) if i != 1 else m.tolist()}
              for i in range(3)]
    root = make(tmp_path / case, n=3, frames=frames)
    one_line_exit_2(capsys, lambda: load_dataset(root, "all"), "transforms.json", "frame 1", "rigid")


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_image_paths_leaving_the_folder_are_refused_unless_allowed(tmp_path, capsys, how):
    outside = tmp_path / "elsewhere" / "secret.png"
    outside.parent.mkdir()
    iio.imwrite(outside, np.zeros((6, 8, 3), np.uint8))
    root = make(tmp_path / "data", n=3)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][2]["file_path"] = str(outside) if how == "absolute" else "../elsewhere/secret.png"
    (root / "transforms.json").write_text(json.dumps(meta))
    one_line_exit_2(capsys, lambda: load_dataset(root, "all"), "frame 2", "leaves the dataset folder")
    data = load_dataset(root, "all", allow_outside_paths=True)
    assert len(data) == 3 and data.names[2].endswith("secret.png")


def test_large_images_are_downscaled_to_the_default_max_side_with_a_notice(tmp_path, capsys):
    assert DEFAULT_MAX_SIDE == 800
    root = make(tmp_path / "big", n=3, h=10, w=1000)
    capsys.readouterr()
    data = load_dataset(root, "all")
    err = capsys.readouterr().err
    assert data.images.shape[1:3] == (8, 800) and data.cameras.width == 800
    assert err.count("\n") == 1 and "1000x10" in err and "800x8" in err, err
    assert abs(float(data.cameras.fx[0]) - 8.0) < 1e-5  # intrinsics follow
    full = load_dataset(root, "all", max_side=0)
    assert full.images.shape[1:3] == (10, 1000)
    one_line_exit_2(capsys, lambda: load_dataset(root, "all", max_side=-5), "max_side")


@pytest.mark.parametrize("case", ["one_pixel", "one_row", "empty_file"])
def test_one_pixel_and_empty_images_give_one_line(tmp_path, capsys, case):
    root = make(tmp_path / case, n=2)
    bad = root / "images" / "f01.png"
    if case == "empty_file":
        bad.write_bytes(b"")
    else:
        iio.imwrite(bad, np.zeros((1, 1, 3) if case == "one_pixel" else (1, 8, 3), np.uint8))
    if case != "empty_file":  # the first image decides the size: make both tiny
        iio.imwrite(root / "images" / "f00.png", iio.imread(bad))
    one_line_exit_2(capsys, lambda: load_dataset(root, "all"), "f0", "transforms.json")
    with pytest.raises(DatasetError):
        from nfkit.images import load_image

        load_image(bad)
