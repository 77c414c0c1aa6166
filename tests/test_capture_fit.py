"""Fitting captures: the background model (environment map) and its field-file round trip, scene bounds from
the sparse points, per-ray backgrounds in rendering, the orbit path, and ``nfkit fit VIDEO`` on bad input
(exit code 2, one line, no metrics.json).  Inputs are synthetic and small; COLMAP is stubbed where the test is
about what happens after it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nfkit import fields
from nfkit.fields.background import EnvironmentMap, attach_background, ray_background

try:
    import av
except ImportError:
    av = None

needs_av = pytest.mark.skipif(av is None, reason="PyAV not installed (pip install av, or nfkit[capture])")
TINY = {"n_levels": 4, "log2_hashmap_size": 10, "hidden": 16, "max_resolution": 32, "backend": "torch"}


def random_dirs(n: int, seed: int = 0) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return d / d.norm(dim=-1, keepdim=True)


def randomised_envmap() -> EnvironmentMap:
    env = EnvironmentMap(EnvironmentMap.Config(height=16, levels=2))
    with torch.no_grad():
        for t in env.textures:
            t.normal_(0, 1, generator=torch.Generator().manual_seed(t.shape[-1]))
    return env


# ------------------------------------------------------------------------------------------ environment map
def test_envmap_is_grey_at_start_continuous_across_the_seam_and_trainable():
    env = EnvironmentMap()
    d = random_dirs(64)
    assert torch.allclose(env(d), torch.full((64, 3), 0.5))
    env = randomised_envmap()
    rgb = env(d)
    assert rgb.shape == (64, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    # Longitude +pi and -pi are the same direction: the colours on both sides of the seam agree.
    eps = 1e-4
    a = torch.tensor([[math.cos(math.pi - eps), math.sin(math.pi - eps), 0.3]])
    b = torch.tensor([[math.cos(-math.pi + eps), math.sin(-math.pi + eps), 0.3]])
    assert torch.allclose(env(a), env(b), atol=1e-3)
    # A direction's length does not matter; gradients reach every level.
    assert torch.allclose(env(3 * d), rgb, atol=1e-6)
    env(d).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in env.textures)


def test_field_file_round_trips_the_background(tmp_path):
    field = fields.build_field("hashgrid", TINY)
    assert field.background(random_dirs(4)) is None  # no model: the protocol says None
    fields.save(field, tmp_path / "plain.safetensors")
    assert "background" not in fields.read_header(tmp_path / "plain.safetensors")
    assert fields.load(tmp_path / "plain.safetensors").background(random_dirs(4)) is None

    attach_background(field, randomised_envmap())
    d = random_dirs(100, seed=1)
    want = field.background(d)
    fields.save(field, tmp_path / "bg.safetensors")
    head = fields.read_header(tmp_path / "bg.safetensors")
    assert head["background"] == {"kind": "envmap", "config": {"height": 16, "levels": 2}}
    loaded = fields.load(tmp_path / "bg.safetensors")
    assert torch.equal(loaded.background(d), want)
    assert torch.equal(ray_background(loaded, d, torch.ones(3)), want)
    x = torch.rand(50, 3) * 3 - 1.5
    assert torch.equal(loaded.density(x), field.density(x))


def test_corrupt_background_metadata_is_a_field_file_error(tmp_path):
    from safetensors.torch import load_file, save_file

    from nfkit.errors import FieldFileError
    from nfkit.fields.io import read_header

    field = fields.build_field("hashgrid", TINY)
    attach_background(field, EnvironmentMap(EnvironmentMap.Config(height=8, levels=1)))
    p = fields.save(field, tmp_path / "f.safetensors")
    meta = read_header(p)
    for bad in ({"kind": "skybox", "config": {}}, {"kind": "envmap", "config": {"height": 1}}, "envmap"):
        meta["background"] = bad
        q = tmp_path / "bad.safetensors"
        save_file(load_file(str(p)), str(q), metadata={"nfkit": json.dumps(meta)})
        with pytest.raises(FieldFileError, match="background"):
            fields.load(q)


# ------------------------------------------------------------------------------------------ rendering
def test_rays_that_miss_see_the_fields_background():
    """An empty field (zero density everywhere) renders exactly its environment map; without a model the
    fallback colour is used, as before."""
    from nfkit.renderers import Cameras, OccupancyGrid, RenderOptions, image_rays
    from nfkit.renderers.background import render_image_bg

    field = fields.build_field("hashgrid", TINY)
    with torch.no_grad():
        field.density_net[-1].bias[0] = -100.0  # sigma = exp(-101): empty
    grid = OccupancyGrid(field.aabb, 8)
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    cams = Cameras(c2w[None], one(10), one(10), one(6), one(4), 12, 8)
    opts = RenderOptions()
    white = render_image_bg(field, grid, cams, 0, opts, torch.ones(3))["rgb"]
    assert torch.allclose(white, torch.ones(8, 12, 3), atol=1e-4)
    attach_background(field, randomised_envmap())
    rgb = render_image_bg(field, grid, cams, 0, opts, torch.ones(3))["rgb"]
    _, d = image_rays(cams, 0)
    assert torch.allclose(rgb.reshape(-1, 3), field.background(d), atol=1e-4)
    assert not torch.allclose(rgb, white, atol=0.05)


def test_view_render_uses_the_background_in_rgb_mode_only():
    from nfkit.apps.view_render import CroppedField, render_view
    from nfkit.renderers import OccupancyGrid, RenderOptions

    field = fields.build_field("hashgrid", TINY)
    with torch.no_grad():
        field.density_net[-1].bias[0] = -100.0
    attach_background(field, randomised_envmap())
    grid = OccupancyGrid(field.aabb, 8)
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    img = render_view(field, grid, RenderOptions(), c2w, 16, 12, 50.0, "rgb", background=(1, 1, 1))
    assert img.shape == (12, 16, 3) and img.min() < 250  # the environment map, not the white fallback
    crop = render_view(field, grid, RenderOptions(), c2w, 16, 12, 50.0, "rgb", crop=([-1] * 3, [1] * 3))
    assert np.abs(crop.astype(int) - img.astype(int)).max() <= 1
    assert CroppedField(field, [-1] * 3, [1] * 3).background(torch.ones(2, 3)).shape == (2, 3)
    opac = render_view(field, grid, RenderOptions(), c2w, 16, 12, 50.0, "opacity", background=(1, 1, 1))
    assert opac.max() <= 1  # empty field: zero opacity, no background drawn


# ------------------------------------------------------------------------------------------ scene bounds
def test_points_aabb_from_sparse_points():
    from nfkit.datasets.normalize import FOCUS_HALF, POINTS_CAP, POINTS_MARGIN, points_aabb

    box = points_aabb([[0.0, 0.0, 0.0], [10.0, 4.0, 2.0]], 0.5, np.array([5.0, 2.0, 1.0]))
    # normalised points box [-2.5, -1, -0.5] .. [2.5, 1, 0.5], grown by 10 % of its size on each side
    pad = POINTS_MARGIN * np.array([5.0, 2.0, 1.0])
    want_lo = np.minimum(np.array([-2.5, -1.0, -0.5]) - pad, -FOCUS_HALF)
    want_hi = np.maximum(np.array([2.5, 1.0, 0.5]) + pad, FOCUS_HALF)
    assert np.allclose(box, [want_lo, want_hi])
    huge = points_aabb([[-1e3] * 3, [1e3] * 3], 1.0, np.zeros(3))
    assert np.allclose(huge, [[-POINTS_CAP] * 3, [POINTS_CAP] * 3])
    assert points_aabb(None, 1.0, np.zeros(3)) is None
    assert points_aabb([[1, 1, 1], [0, 0, 0]], 1.0, np.zeros(3)) is None
    assert points_aabb([[0, 0, float("nan")], [1, 1, 1]], 1.0, np.zeros(3)) is None


def test_nerfstudio_loader_takes_the_aabb_from_the_sparse_points(tmp_path):
    from conftest import write_sphere_capture

    from nfkit.datasets import load_dataset
    from nfkit.datasets.normalize import normalize_poses, points_aabb

    root = write_sphere_capture(tmp_path / "cap", n=8, size=8)
    meta = json.loads((root / "transforms.json").read_text())
    del meta["aabb_scale"]
    meta["nfkit_points_bounds"] = [[-0.8, -0.6, -0.4], [0.8, 0.6, 0.4]]
    (root / "transforms.json").write_text(json.dumps(meta))
    data = load_dataset(root, "train")
    s, c = normalize_poses(np.stack([np.asarray(f["transform_matrix"]) for f in meta["frames"]]))
    assert torch.allclose(data.aabb, torch.tensor(points_aabb(meta["nfkit_points_bounds"], s, c)).float())
    del meta["nfkit_points_bounds"]
    (root / "transforms.json").write_text(json.dumps(meta))
    assert torch.equal(load_dataset(root, "train").aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))


def test_trainer_attaches_an_envmap_for_rgb_data_only(tmp_path):
    from conftest import write_sphere_capture

    from nfkit.datasets import load_dataset
    from nfkit.trainer import FitConfig, Trainer

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=4, size=8), "all")
    cfg = FitConfig(out=str(tmp_path / "o"), field_options=dict(TINY), grid_resolution=8)
    rgba = Trainer(cfg, data, None, progress=False)
    assert rgba.field.background(random_dirs(2)) is None and rgba.sparsity == 0  # RGBA: as before
    rgb = type(data)(**{**data.__dict__, "images": data.images[..., :3].contiguous()})
    tr = Trainer(cfg, rgb, None, progress=False)
    assert tr.field.background(random_dirs(2)).shape == (2, 3) and tr.sparsity > 0
    env_params = {id(p) for p in tr.field.background_model.parameters()}
    assert env_params <= {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    before = [t.detach().clone() for t in tr.field.background_model.textures]
    tr.train_step()
    assert any(not torch.equal(a, t) for a, t in zip(before, tr.field.background_model.textures))
    cfg.background = "none"
    assert Trainer(cfg, rgb, None, progress=False).field.background(random_dirs(2)) is None


def test_refresh_grid_forgets_emptied_regions(tmp_path):
    """The grid's running maximum remembers density the field no longer has; the refresh re-evaluates it."""
    from conftest import write_sphere_capture

    from nfkit.datasets import load_dataset
    from nfkit.trainer import FitConfig, Trainer

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=4, size=8), "all")
    tr = Trainer(FitConfig(out=str(tmp_path / "o"), field_options=dict(TINY), grid_resolution=8), data, None,
                 progress=False)
    tr.field.density = lambda x: 10.0 * (x[:, 0] > 0).float()  # the field is now empty where x < 0 ...
    tr.grid.density.fill_(1.0)  # ... but the grid remembers it full everywhere
    tr.grid.binary.fill_(True)
    tr.refresh_grid()
    centres = tr.grid.cell_points(torch.arange(8 ** 3), jitter=False)
    assert torch.equal(tr.grid.binary, centres[:, 0] > 0)
    assert torch.allclose(tr.grid.density, 10.0 * tr.opts.step_size * (centres[:, 0] > 0).float())


def test_fit_learning_rate_is_the_familys_unless_given(tmp_path):
    """``FitConfig.lr`` 0 takes the family's rate (FIT_LR: the rbf field and tri-planes train faster at higher
    rates than the hash grid), resolved into the config saved with the field; a given rate is kept; < 0 is refused;
    the rate decays to ``lr_final`` of itself."""
    from conftest import write_sphere_capture

    from nfkit.datasets import load_dataset
    from nfkit.errors import NfkitError
    from nfkit.trainer import DEFAULT_LR, DEFAULT_LR_FINAL, FitConfig, Trainer, fit_lr, fit_lr_final

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=4, size=8), "all")
    tiny = {"triplane": {"resolution": 8, "channels": 4, "hidden": 16}, "hashgrid": dict(TINY)}
    assert fit_lr("hashgrid") == DEFAULT_LR < fit_lr("triplane") < fit_lr("rbf")
    for family in ("hashgrid", "triplane"):
        cfg = FitConfig(out=str(tmp_path / family), field=family, field_options=tiny[family], grid_resolution=8)
        tr = Trainer(cfg, data, None, progress=False)
        assert tr.cfg.lr == fit_lr(family) and cfg.lr == 0.0  # the caller's config is not modified
        assert max(g["lr"] for g in tr.optimizer.param_groups) == pytest.approx(fit_lr(family))
    cfg = FitConfig(out=str(tmp_path / "given"), field="triplane", field_options=tiny["triplane"], grid_resolution=8,
                    lr=3e-3)
    assert Trainer(cfg, data, None, progress=False).cfg.lr == 3e-3
    with pytest.raises(NfkitError, match="--lr"):
        Trainer(FitConfig(out=str(tmp_path / "bad"), lr=-1.0, field_options=dict(TINY)), data, None, progress=False)
    # the decay: full rate after the warm-up, lr_final of it at the end of the run, geometric in between
    tr = Trainer(FitConfig(out=str(tmp_path / "decay"), lr_final=0.25, field_options=dict(TINY), grid_resolution=8),
                 data, None, progress=False)
    tr.step = 100
    assert [tr.lr_factor(p) for p in (0.0, 0.5, 1.0, 2.0)] == pytest.approx([1.0, 0.5, 0.25, 0.25])
    assert tr.cfg.lr_final == 0.25 and fit_lr_final("cam") < fit_lr_final("hashgrid") == DEFAULT_LR_FINAL
    assert Trainer(FitConfig(out=str(tmp_path / "default"), field_options=dict(TINY), grid_resolution=8), data, None,
                   progress=False).cfg.lr_final == DEFAULT_LR_FINAL
    for bad in (-0.1, 1.5):
        with pytest.raises(NfkitError, match="--lr-final"):
            Trainer(FitConfig(out=str(tmp_path / "bad"), lr_final=bad, field_options=dict(TINY)), data, None,
                    progress=False)


# ------------------------------------------------------------------------------------------ orbit
def test_orbit_circles_the_centre_at_the_cameras_height_and_distance():
    """One circle at the cameras' mean height and distance, looking at the centre: a full turn for a ring of
    cameras, a sweep of the covered arc and back for a capture that saw one side only."""
    from conftest import look_at_c2w

    from nfkit.apps.orbit import orbit_poses

    def check(azimuths, n):
        eyes = [np.array([3 * math.cos(a), 3 * math.sin(a), 1.5]) for a in azimuths]
        cams = np.stack([look_at_c2w(e) for e in eyes])
        poses = orbit_poses(cams, n_frames=n)
        pos = poses[:, :3, 3]
        up = cams[:, :3, 1].mean(0)
        up /= np.linalg.norm(up)
        assert np.allclose(pos @ up, (np.stack(eyes) @ up).mean(), atol=1e-9)  # the cameras' mean height
        fwd = -poses[:, :3, 2]
        assert np.allclose(np.cross(fwd, -pos / np.linalg.norm(pos, axis=1, keepdims=True)), 0, atol=1e-9)
        horiz = pos - (pos @ up)[:, None] * up
        assert np.allclose(np.linalg.norm(horiz, axis=1), np.linalg.norm(horiz[0]))
        return np.arctan2(pos[:, 1], pos[:, 0])

    # One side: 0.3 -> 1.5 -> back (the mean up vector leans a little towards the arc, hence the tolerance).
    ang = check(np.linspace(0.3, 1.5, 6), 12)
    assert abs(ang[0] - 0.3) < 0.02 and abs(ang[6] - 1.5) < 0.02
    assert ang.min() > 0.3 - 0.02 and ang.max() < 1.5 + 0.02 and np.allclose(ang[1:6], ang[11:6:-1])
    ring = np.linspace(0, 2 * np.pi, 9)[:-1] + 0.2
    ang = check(ring, 12)  # all around: a full turn from the first camera, no repeats
    assert abs(ang[0] - 0.2) < 1e-6
    assert len(np.unique(np.round(np.mod(ang, 2 * np.pi), 6))) == 12


# ------------------------------------------------------------------------------------------ bad input
def run_fit(args, capsys) -> tuple[int, str]:
    from nfkit.apps.cli import main

    code = main(["fit", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def stale_out(tmp_path: Path) -> Path:
    """An output folder holding an earlier run's metrics.json, which a failing run must remove."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"psnr": 30.0}')
    return out


def write_video(path: Path, frames, fps: int = 10) -> Path:
    import imageio.v2 as iio2

    with iio2.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=16) as w:
        for f in frames:
            w.append_data(f)
    return path


@needs_av
def test_fit_video_with_no_decodable_frame_exits_2(tmp_path, capsys):
    """A video whose header survives but whose frame data is gone (truncated download)."""
    c = av.open(str(tmp_path / "v.mp4"), "w", options={"movflags": "faststart"})  # header first
    s = c.add_stream("libx264", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    for i in range(6):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    data = (tmp_path / "v.mp4").read_bytes()
    video = tmp_path / "truncated.mp4"
    video.write_bytes(data[:data.index(b"mdat") + 4])
    out = stale_out(tmp_path)
    code, err = run_fit([video, "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and str(video) in err and "no frame could be decoded" in err
    assert "re-encode" in err and not (out / "metrics.json").exists()


def test_fit_on_a_text_file_named_mp4_exits_2(tmp_path, capsys):
    if av is None:
        pytest.skip("PyAV not installed")
    video = tmp_path / "notes.mp4"
    video.write_text("not a video\n" * 50)
    out = stale_out(tmp_path)
    code, err = run_fit([video, "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a readable video" in err
    assert not (out / "metrics.json").exists()


@needs_av
def test_fit_with_two_registered_frames_exits_2_with_advice(tmp_path, capsys, monkeypatch):
    """COLMAP stubbed to register 2 of the 6 chosen frames: the one-line advice, exit 2, no transforms.json or
    metrics.json."""
    pytest.importorskip("pycolmap")
    import nfkit.datasets.capture as capture
    from nfkit.datasets.colmap import PoseResult

    def two_of(image_dir, work_dir, **kw):
        return PoseResult(None, len(list(Path(image_dir).iterdir())), 2, float("nan"), 0, "sequential")

    monkeypatch.setattr(capture, "run_colmap", two_of)
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "clip.mp4", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                                                for _ in range(12)])
    out = stale_out(tmp_path)
    code, err = run_fit([video, "--out", out, "--frames", "6"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{video}: only 2 of 6 frames could be registered: film more slowly" in err
    assert err.rstrip().endswith("or pass --frames 12")
    assert not (out / "metrics.json").exists() and not (out / "transforms.json").exists()
    assert json.loads((out / "poses.json").read_text())["ok"] is False


def test_capture_mesh_of_the_fitted_field(tmp_path, monkeypatch):
    """The capture's mesh.ply: the level set of the field (a ball of radius 0.5 here); an empty field gives no
    mesh and no error."""
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("skimage")
    from conftest import write_sphere_capture

    import nfkit.apps.fit_scene as fit_scene
    from nfkit.datasets import load_dataset
    from nfkit.trainer import FitConfig, Trainer

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=4, size=8), "all")
    tr = Trainer(FitConfig(out=str(tmp_path / "o"), field_options=dict(TINY), grid_resolution=8), data, None,
                 progress=False)
    monkeypatch.setattr(fit_scene, "MESH_RESOLUTION", 40)
    tr.field.density = lambda x: 100.0 * (x.norm(dim=-1) < 0.5).float()
    info = fit_scene.capture_mesh(tr, tmp_path)
    mesh = trimesh.load(tmp_path / "mesh.ply")
    assert info["path"] == str(tmp_path / "mesh.ply") and info["faces"] == len(mesh.faces) > 100
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - 0.5) < 0.05 and r.max() < 0.6
    tr.field.density = lambda x: torch.zeros(x.shape[0])
    assert fit_scene.capture_mesh(tr, tmp_path / "empty") is None
