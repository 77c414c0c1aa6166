"""nfkit convert (PVD distillation): every ordered pair of the five radiance families on tiny fields, the
volume-feature interface, same-family copies, refused inputs. Tiny configs and a 16^3 grid: a few seconds in all."""
import json

import pytest
import torch

from nfkit import fields
from nfkit.apps.cli import main as cli_main
from nfkit.distill import DistillConfig, Distiller, copy_color_head, student_config
from nfkit.distill.convert import load_teacher
from nfkit.fields.base import SIGMA_CLIP
from nfkit.renderers import OccupancyGrid, RenderOptions
from nfkit.renderers.camera_range import camera_prior

FAMILIES = ["mlp", "cam", "rbf", "triplane", "hashgrid"]
TINY = {
    "mlp": {"hidden": 16, "n_layers": 2, "n_freqs": 3},
    "cam": {"hidden": 16, "n_layers": 2, "n_freqs": 3},
    "rbf": {"resolutions": [4, 8], "channels": [2, 2], "n_units": 8},
    "triplane": {"resolution": 8, "channels": 4, "hidden": 16},
    "hashgrid": {"n_levels": 4, "log2_hashmap_size": 10, "max_resolution": 32, "hidden": 16},
}
AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])


def tiny(family, seed=0, common_head=False, **options):
    torch.manual_seed(seed)
    cfg = {**TINY[family], **options}
    if family != "hashgrid":
        cfg["signal"] = "radiance"
        if common_head:
            cfg["color_head"] = "mlp"
    return fields.build_field(family, cfg, AABB)


def teacher_grid(field, res=16):
    grid = OccupancyGrid(AABB, res)
    with torch.no_grad():
        grid.update(0, field.density, 2.0 / 32)
    return grid


def gap(teacher, student, n=4096):
    """Per-point disagreement on fixed points: clamped log-density MSE + colour MSE."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(n, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    with torch.no_grad():
        vt, vs = teacher.volume(x, d), student.volume(x, d)
        ls = torch.mean((vt.log_sigma.clamp(*SIGMA_CLIP) - vs.log_sigma.clamp(*SIGMA_CLIP)) ** 2)
        col = torch.mean((teacher.volume_color(vt, d) - student.volume_color(vs, d)) ** 2)
    return float(ls + col)


@pytest.mark.parametrize("family", FAMILIES)
def test_volume_features_match_forward(family):
    f = tiny(family)
    x = torch.rand(300, 3) * 2.4 - 1.2
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    vf = f.volume(x, d)
    out = f(x, d)
    sigma = torch.where(vf.log_sigma > -29, torch.exp(vf.log_sigma.clamp(max=15)), torch.zeros(()))
    assert torch.allclose(sigma, out.density, rtol=1e-4, atol=1e-6)
    assert torch.allclose(f.volume_color(vf, d), out.rgb, atol=1e-5)
    expected_k = 48 if family == "rbf" else 15  # rbf's own default head is SH; convert students use the MLP head
    assert vf.geo.shape == (300, expected_k)
    assert tiny(family, common_head=True).volume(x, d).geo.shape[1] == 15


PAIRS = [(a, b) for a in FAMILIES for b in FAMILIES if a != b]  # the 20 ordered pairs (same family: a copy)


@pytest.mark.parametrize("src, dst", PAIRS)
def test_every_pair_distils_and_the_gap_closes(src, dst):
    teacher = tiny(src, seed=1)
    grid = teacher_grid(teacher)
    student = fields.build_field(dst, {**student_config(dst), **TINY[dst]}, AABB)
    before = gap(teacher, student)
    cfg = DistillConfig(steps=80, samples_per_step=2048, stage1=0.3, stage2=0.6, cameras_per_draw=8,
                        redraw_every=10, lr=1e-2)
    dist = Distiller(teacher, grid, RenderOptions(step_size=2 * 3**0.5 / 64), student, cfg,
                     camera_prior(AABB), progress=False)
    hist = dist.fit()
    assert len(hist) == 80 and {h["stage"] for h in hist} == {1, 2, 3}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert "rgb" in hist[-1] and "color" in hist[-1]
    after = gap(teacher, student)
    assert after < 0.8 * before, (before, after)
    # the teacher is frozen: distillation never changes it
    assert all(not p.requires_grad for p in teacher.parameters())


def test_color_head_copy_layouts():
    h = fields.build_field("hashgrid", {**TINY["hashgrid"], "hidden": 64}, AABB)  # colour MLP 64 wide, as mlp's
    m, t = tiny("mlp", 3, precision="float32"), tiny("triplane", 4, precision="float32")  # exact comparisons
    assert copy_color_head(m, t)  # same layout: identical heads afterwards
    feats = torch.randn(50, 15)
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    assert torch.allclose(m._color(feats, d), t._color(feats, d), atol=1e-6)
    assert copy_color_head(m, h)  # coordinate head -> hash grid: the raw-density column starts at zero
    hin = torch.cat([torch.randn(50, 1), feats], 1)
    assert torch.allclose(h.color(hin, d), m._color(feats, d), atol=1e-6)
    assert not copy_color_head(tiny("hashgrid"), m)  # 16-wide colour MLP against 64: no copy
    assert not copy_color_head(tiny("rbf"), m)  # SH-coefficient head: nothing to copy


def test_conversion_defaults_and_rates():
    """mlp / cam students get the wide conversion trunk (user options still win); each family gets its own base
    rate unless --lr is given."""
    from nfkit.distill.convert import CONVERT_DEFAULTS

    for fam in ("mlp", "cam"):
        f = fields.build_field(fam, student_config(fam), AABB)
        c = f.config
        wide = CONVERT_DEFAULTS[fam]
        assert (c.hidden, c.n_layers, c.n_freqs) == (wide["hidden"], wide["n_layers"], wide["n_freqs"])
        assert c.color_head == "mlp" and c.geo_features == 15
    assert student_config("mlp", {"hidden": 32})["hidden"] == 32
    assert "hidden" not in student_config("triplane")
    cfg = DistillConfig()
    assert cfg.lr_for("mlp") < cfg.lr_for("triplane") == cfg.lr_for("hashgrid")
    assert DistillConfig(lr=1e-3).lr_for("mlp") == DistillConfig(lr=1e-3).lr_for("rbf") == 1e-3


def save_teacher(tmp_path, family="mlp", name="teacher.safetensors", normalization=None, info=None):
    f = tiny(family, seed=2)
    grid = teacher_grid(f)
    path = tmp_path / name
    fields.save(f, path, normalization=normalization, info=info,
                extra_tensors={f"occgrid.{k}": v for k, v in grid.state_dict().items()})
    return path, f


def test_convert_cli_writes_field_and_metrics(tmp_path, capsys):
    src, _ = save_teacher(tmp_path, "mlp", normalization={"transform": (torch.eye(4) * 2).tolist(), "scale": 2.0})
    cfg = tmp_path / "student.json"
    cfg.write_text(json.dumps(TINY["triplane"]))
    out = tmp_path / "out" / "student.safetensors"
    rc = cli_main(["convert", str(src), str(out), "--to", "triplane", "--steps", "12", "--config", str(cfg),
                   "--samples-per-step", "1024", "--eval-views", "2"])
    assert rc == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["mode"] == "distill" and m["from"] == "mlp" and m["to"] == "triplane" and m["steps"] == 12
    assert set(m["stage_seconds"]) == {"stage1", "stage2", "stage3"} and m["psnr_vs_teacher"] > 0
    field, grid, opts, meta = load_teacher(out)  # loads with its occupancy grid
    assert meta["family"] == "triplane" and field.config.resolution == 8
    assert meta["normalization"]["scale"] == 2.0  # the teacher's normalisation travels with the student
    assert meta["info"]["teacher_family"] == "mlp"
    rc = cli_main(["info", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "triplane" in text and "format_version: 1" in text and "n_params" in text
    assert f"origin: converted from mlp {src} (12 steps" in text and "camera_range: None" in text
    n = sum(p.numel() for p in field.parameters())
    assert f"{n:,}" in text


def test_same_family_is_an_exact_copy(tmp_path):
    src, _ = save_teacher(tmp_path, "hashgrid")
    out = tmp_path / "copy.safetensors"
    assert cli_main(["convert", str(src), str(out), "--to", "hashgrid"]) == 0
    assert out.read_bytes() == src.read_bytes()
    assert json.loads((tmp_path / "metrics.json").read_text())["mode"] == "copy"


def _rewrite_header(src, dst, **changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["nfkit"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(dst), metadata={"nfkit": json.dumps(meta)})


def test_newer_format_version_is_refused(tmp_path, capsys):
    src, _ = save_teacher(tmp_path, "mlp")
    newer = tmp_path / "newer.safetensors"
    _rewrite_header(src, newer, format_version=fields.io.FORMAT_VERSION + 1)
    out = tmp_path / "o.safetensors"
    assert cli_main(["convert", str(newer), str(out), "--to", "hashgrid", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "newer.safetensors" in err and "newer than this nfkit supports" in err
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--to", "nosuchfamily"], "--to"),
    (["--to", "mlp", "--steps", "0"], "--steps"),
    (["--to", "mlp", "--config", "missing.json"], "--config"),
])
def test_bad_arguments_give_one_line(tmp_path, capsys, args, words):
    src, _ = save_teacher(tmp_path, "hashgrid")
    assert cli_main(["convert", str(src), str(tmp_path / "o.safetensors"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_sdf_teacher_is_refused(tmp_path, capsys):
    f = fields.build_field("mlp", {"signal": "sdf", **TINY["mlp"]}, AABB)
    src = tmp_path / "sdf.safetensors"
    fields.save(f, src)
    assert cli_main(["convert", str(src), str(tmp_path / "o.safetensors"), "--to", "hashgrid"]) == 2
    assert "radiance" in capsys.readouterr().err


def _upper_ring_prior() -> dict:
    """A stored camera range like lego's: distance 3.5-4.5 from the centre, elevation 10-60 degrees."""
    from nfkit.renderers.camera_range import CameraPrior, prior_to_dict

    return prior_to_dict(CameraPrior((0.0, 0.0, 0.0), (3.5, 4.5), (0.17, 1.05), 40.0, 0.15, (1.0, 1.0, 1.0)))


def test_stored_camera_range_aims_the_virtual_cameras(tmp_path, capsys):
    """Without --data the virtual cameras follow the teacher file's info.camera_prior (written by nfkit fit), and
    the student's file carries it on; a file without one falls back to the whole sphere."""
    from nfkit.renderers.camera_range import field_prior, prior_from_dict, virtual_cameras

    stored = _upper_ring_prior()
    src, _ = save_teacher(tmp_path, "mlp", info={"camera_prior": stored})
    out = tmp_path / "s.safetensors"
    assert cli_main(["convert", str(src), str(out), "--to", "triplane", "--steps", "3", "--config",
                     str(_write(tmp_path / "c.json", TINY["triplane"])), "--eval-views", "1"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["cameras_from"] == "field file"
    carried = fields.read_header(out)["info"]["camera_prior"]
    capsys.readouterr()
    assert cli_main(["info", str(out), "--json"]) == 0  # nfkit info shows the stored range in words
    shown = json.loads(capsys.readouterr().out)["camera_range"]
    assert shown == "distance 3.50-4.50, elevation 10 to 60 deg, fov 40 deg"
    assert all(carried[k] == pytest.approx(v) for k, v in stored.items())
    cams = virtual_cameras(prior_from_dict(carried, "x"), 200, 8, torch.Generator().manual_seed(0))
    eye = cams.c2w[:, :3, 3]
    r, elev = eye.norm(dim=-1), torch.asin(eye[:, 2] / eye.norm(dim=-1))
    assert float(r.min()) >= 3.5 - 1e-4 and float(r.max()) <= 4.5 + 1e-4
    assert float(elev.min()) >= 0.17 - 1e-4 and float(elev.max()) <= 1.05 + 1e-4
    bare, _ = save_teacher(tmp_path, "mlp", name="bare.safetensors")
    meta = fields.read_header(bare)
    prior, source = field_prior(AABB, meta, str(bare))
    assert source == "sphere" and prior.elevation[0] < -1.5 and prior.elevation[1] > 1.5


@pytest.mark.parametrize("bad", [{"center": [0, 0]}, "ring", {**_upper_ring_prior(), "radius": [4.5, 3.5]},
                                 {**_upper_ring_prior(), "fov_y_deg": float("nan")}])
def test_malformed_camera_range_is_a_one_line_error(tmp_path, capsys, bad):
    src, _ = save_teacher(tmp_path, "mlp", info={"camera_prior": bad})
    assert cli_main(["convert", str(src), str(tmp_path / "o.safetensors"), "--to", "triplane", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "teacher.safetensors" in err and "camera_prior" in err
    assert not (tmp_path / "o.safetensors").exists()
    assert cli_main(["info", str(src)]) == 0 and "camera_range: corrupt" in capsys.readouterr().out


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path
