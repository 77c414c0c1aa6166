"""``nfkit fit`` end to end on a tiny synthetic capture written by the test: outputs, resume, and bad input.

The capture: a nerfstudio ``transforms.json`` ("aabb_scale": 1, so the region is [-1.5, 1.5]^3 in the file's
coordinates) with 10 frames of 16x16 RGBA images of a sphere (radius 0.8 at the origin, colour = its normal
mapped to [0, 1]) rendered analytically from cameras at radius 4 looking at the origin. Frames 0 and 8 are the
held-out test views (every 8th frame).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfkit import fields
from nfkit.apps.cli import main

SIZE, N_FRAMES, RADIUS = 16, 10, 0.8
FIELD_ARGS = ["--field-options", "n_levels=4", "log2_hashmap_size=12", "hidden=16", "--samples-per-step", "4096"]


def look_at(eye: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world at ``eye`` looking at the origin, world +Z up."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def write_capture(root: Path, n: int = N_FRAMES, size: int = SIZE) -> Path:
    """Writes ``root/transforms.json`` and ``root/images/*.png`` (see the module docstring); returns root."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    focal = 0.5 * size / math.tan(math.radians(25))
    frames = []
    for i in range(n):
        az, el = 2 * math.pi * i / n, math.radians(15 + 15 * (i % 3))
        eye = 4.0 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        c2w = look_at(eye)
        v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        d_cam = np.stack([(u + 0.5 - size / 2) / focal, -(v + 0.5 - size / 2) / focal, -np.ones((size, size))], -1)
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        b = d @ eye
        disc = b * b - (eye @ eye - RADIUS**2)
        hit = disc > 0
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        normal = (eye + t[..., None] * d) / RADIUS
        img = np.zeros((size, size, 4))
        img[..., :3] = np.where(hit[..., None], 0.5 + 0.5 * normal, 0.0)
        img[..., 3] = hit
        name = f"images/frame_{i:02d}.png"
        iio.imwrite(root / name, (img * 255).round().astype(np.uint8))
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    meta = {"camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size,
            "h": size, "aabb_scale": 1, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("capture"))


def test_capture_is_consistent(capture):
    """Sanity check of the synthetic data: every image shows the sphere (some alpha) and leaves background
    (some transparent pixels); the dataset loads with 8 train and 2 test views in the [-1.5, 1.5]^3 box."""
    from nfkit.datasets import load_dataset

    train, test = load_dataset(capture, "train"), load_dataset(capture, "test")
    assert len(train) == 8 and len(test) == 2 and test.names == ["images/frame_00.png", "images/frame_08.png"]
    assert torch.equal(train.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    alpha = torch.cat([train.images, test.images])[..., 3]
    assert bool((alpha.flatten(1).amax(1) == 1).all()) and bool((alpha.flatten(1).amin(1) == 0).all())


def test_fit_writes_metrics_field_and_renders(capture, tmp_path):
    """`nfkit fit DATA --out OUT --steps 20 ...` returns 0, writes metrics.json with psnr, ssim, steps,
    train_seconds, samples_per_second, n_params and field; the field file loads (with the requested config);
    renders/ holds one PNG per test view (ground truth | render side by side)."""
    out = tmp_path / "out"
    rc = main(["fit", str(capture), "--out", str(out), "--steps", "20", "--quiet", *FIELD_ARGS])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "steps", "train_seconds", "samples_per_second", "n_params", "field"):
        assert key in m, key
    assert m["steps"] == 20
    assert math.isfinite(m["psnr"]) and m["psnr"] > 0 and -1 <= m["ssim"] <= 1
    assert m["train_seconds"] > 0 and m["samples_per_second"] > 0
    field = fields.load(m["field"])
    assert Path(m["field"]) == out / "field.safetensors"
    assert m["n_params"] == sum(p.numel() for p in field.parameters())
    assert field.config.n_levels == 4 and field.config.log2_hashmap_size == 12 and field.config.hidden == 16
    x = torch.rand(32, 3) * 3 - 1.5
    assert bool(torch.isfinite(field.density(x)).all())
    # the training cameras' range travels in the file, for `nfkit convert` without the data
    from nfkit.datasets import load_dataset
    from nfkit.renderers.camera_range import camera_prior, prior_to_dict

    stored = fields.read_header(m["field"])["info"]["camera_prior"]
    expected = prior_to_dict(camera_prior(field.aabb, load_dataset(capture, "train").cameras))
    assert all(stored[k] == pytest.approx(v, abs=1e-5) for k, v in expected.items())
    pngs = sorted((out / "renders").glob("*.png"))
    assert [p.name for p in pngs] == ["000_frame_00.png", "001_frame_08.png"]
    for p in pngs:
        assert iio.imread(p).shape == (SIZE, 2 * SIZE, 3)


def _checkpoint_state(out: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = out / "checkpoint" / "state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["nfkit_state"])
    return meta, load_file(str(path))


def test_resume_continues_from_step_10(capture, tmp_path, monkeypatch):
    """Run 10 steps (a checkpoint is written at the end), then `--steps 20 --resume`: the second run executes
    exactly steps 10..19 (counted by wrapping Trainer.train_step), metrics.json says 20 steps, and the checkpoint
    records step 20 with Adam's step counters at 20 (the optimizer state was restored, not restarted)."""
    from nfkit import trainer as trainer_mod

    out = tmp_path / "out"
    args = ["fit", str(capture), "--out", str(out), "--quiet", *FIELD_ARGS]
    assert main([*args, "--steps", "10"]) == 0
    meta, tensors = _checkpoint_state(out)
    assert meta["loop"]["step"] == 10
    adam_steps = {k: v for k, v in tensors.items() if k.endswith(".step")}
    assert adam_steps and all(float(v) == 10 for v in adam_steps.values())
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10

    seen = []
    original = trainer_mod.Trainer.train_step

    def counting(self):
        seen.append(self.step)
        return original(self)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", counting)
    assert main([*args, "--steps", "20", "--resume"]) == 0
    assert seen == list(range(10, 20))
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 20
    meta, tensors = _checkpoint_state(out)
    assert meta["loop"]["step"] == 20
    assert all(float(v) == 20 for k, v in tensors.items() if k.endswith(".step"))
    assert fields.read_header(out / "field.safetensors")["info"]["step"] == 20


def test_resume_without_checkpoint_is_an_error(capture, tmp_path, capsys):
    """--resume into a folder without a checkpoint: exit code 2 and one 'nfkit: error:' line naming the folder."""
    out = tmp_path / "fresh"
    assert main(["fit", str(capture), "--out", str(out), "--steps", "2", "--resume", "--quiet", *FIELD_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nfkit: error:") and str(out) in err[0]


# ---------------------------------------------------------------------------------------------- bad inputs


def _run_fit(data: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfkit.apps.cli", "fit", str(data), "--out", str(out),
                           "--steps", "2", "--quiet"], capture_output=True, text=True, timeout=300)


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfkit: error:"), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("case", ["missing_image", "malformed_json", "nan_transform", "no_such_path"])
def test_bad_dataset_exits_2_with_one_line(tmp_path, case):
    """`python -m nfkit.apps.cli fit` on bad input exits with code 2, prints exactly one stderr line starting with
    'nfkit: error:' naming the offending file, no traceback, and writes no metrics."""
    root = write_capture(tmp_path / "cap", n=4, size=8)
    tj = root / "transforms.json"
    if case == "missing_image":  # every image gone: nothing left to train on (some missing: skipped, see below)
        for png in (root / "images").glob("*.png"):
            png.unlink()
        needles = [str(tj), "not found"]
    elif case == "malformed_json":
        tj.write_text(tj.read_text()[:-30])
        needles = [str(tj)]
    elif case == "nan_transform":
        meta = json.loads(tj.read_text())
        meta["frames"][1]["transform_matrix"][1][3] = float("nan")
        tj.write_text(json.dumps(meta))  # Python writes the non-standard NaN literal, which json.loads accepts
        assert "NaN" in tj.read_text()
        needles = [str(tj), "NaN"]
    else:
        root = tmp_path / "does_not_exist"
        needles = [str(root)]
    out = tmp_path / "out"
    r = _run_fit(root, out)
    _assert_one_line_error(r, *needles)
    assert not (out / "metrics.json").exists()


def test_missing_images_are_skipped_with_one_warning(tmp_path):
    """instant-ngp's fox lists frames whose images were deleted upstream: frames with a missing image are skipped
    with one warning saying how many, and the fit trains on the rest (issue 25)."""
    root = write_capture(tmp_path / "cap", n=6, size=8)
    (root / "images" / "frame_02.png").unlink()
    (root / "images" / "frame_04.png").unlink()
    out = tmp_path / "out"
    r = _run_fit(root, out)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if "skipping" in line]
    assert len(warnings) == 1 and "missing" in warnings[0], r.stderr[-2000:]
    assert (out / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_field_file_through_guarded_exits_2(tmp_path, kind):
    """nfkit.apps.cli.guarded around nfkit.fields.load: a truncated field file and a text file each give exit code
    2 and one 'nfkit: error:' line naming the file, no traceback."""
    path = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        f = fields.build_field("hashgrid", {"n_levels": 2, "log2_hashmap_size": 8, "hidden": 8})
        raw = fields.save(f, tmp_path / "good.safetensors").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.write_text("this is a text file, not a field\n" * 20)
    code = ("import sys\nfrom nfkit.apps.cli import guarded\nfrom nfkit.fields import load\n"
            "sys.exit(guarded(lambda: load(sys.argv[1])))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    _assert_one_line_error(r, str(path))
