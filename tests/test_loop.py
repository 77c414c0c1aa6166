"""The shared training loop (nfkit/loop.py) and its objectives: clock, schedule, sums of terms, divergence,
resume with the random stream, nfkit fit's config.json / --config, and the surface objective on a sphere."""
import json

import nfkit  # noqa: F401
import pytest
import torch

from nfkit.apps.cli import main
from nfkit.errors import NfkitError
from nfkit.loop import Loop, Objective, Schedule, lr_factor


class Toy(Objective):
    """Two terms on one parameter vector; optional sleep per step; ``bad`` returns NaN at that step."""

    def __init__(self, sleep: float = 0.0, bad: int = -1):
        self.field = torch.nn.Linear(1, 4, bias=False)
        self.sleep, self.bad = sleep, bad

    def param_groups(self, lr):
        return [{"params": list(self.field.parameters())}]

    def losses(self, step, progress):
        import time

        time.sleep(self.sleep)
        s = self.field.weight.sum()
        if step == self.bad:
            s = s * float("nan")
        return {"a": s, "b": 2 * s}


def test_stops_on_steps():
    loop = Loop(Toy(), Schedule(steps=7))
    loop.run()
    assert loop.step == 7 and loop.progress_fraction() == 1.0 and loop.done()


def test_stops_on_seconds_first():
    loop = Loop(Toy(sleep=0.02), Schedule(steps=10**6, max_seconds=0.1))
    loop.run()
    assert 0.1 <= loop.elapsed < 1.0 and 3 <= loop.step < 60
    assert loop.progress_fraction() == 1.0


def test_rate_decays_to_the_final_fraction():
    loop = Loop(Toy(), Schedule(steps=10, lr=0.5, lr_final=0.1, warmup=4))
    seen = []
    loop.run(lambda lp: seen.append(lp.optimizer.param_groups[0]["lr"]))
    expected = [0.5 * min(1.0, (s + 1) / 4) * 0.1 ** (s / 10) for s in range(10)]
    assert seen == pytest.approx(expected)
    assert lr_factor(100, 1.0, 0.1) == pytest.approx(0.1) and lr_factor(100, 5.0, 0.1) == pytest.approx(0.1)


def test_losses_are_summed_and_logged():
    obj = Toy()
    loop = Loop(obj, Schedule(steps=1, lr=0.0))
    stats = loop.train_step()
    s = float(obj.field.weight.detach().sum())
    assert stats["a"] == pytest.approx(s) and stats["b"] == pytest.approx(2 * s)
    assert stats["loss"] == pytest.approx(3 * s)
    assert torch.allclose(obj.field.weight.grad, torch.full((4, 1), 3.0))  # gradient of the sum


def test_non_finite_loss_raises_and_leaves_the_parameters():
    obj = Toy(bad=3)
    loop = Loop(obj, Schedule(steps=10))
    with pytest.raises(NfkitError, match="diverged at step 3"):
        loop.run()
    assert loop.step == 3 and bool(torch.isfinite(obj.field.weight).all())


def _image_fit(ckpt, steps):
    """A tiny image field on random pixels (the batch draws from torch's global generator)."""
    from nfkit import fields
    from nfkit.objectives import RegressionObjective

    torch.manual_seed(0)
    field = fields.build_field("mlp", {"hidden": 16, "n_layers": 2, "n_freqs": 3, "signal": "image"},
                               torch.tensor([[0.0] * 3, [1.0] * 3]))
    xy = torch.rand(256, 2)
    rgb = torch.stack([xy[:, 0], xy[:, 1], xy.prod(-1)], -1)

    def batch(step):
        i = torch.randint(0, 256, (32,))
        return xy[i], rgb[i]

    obj = RegressionObjective(field, batch, lambda f, x, y: torch.mean((f(x).rgb - y) ** 2))
    # constant rate: a 10-step run and the first half of a 20-step run take the same steps
    return Loop(obj, Schedule(steps=steps, lr=1e-2, lr_final=1.0, warmup=1), checkpoint_dir=ckpt), field


def test_resume_continues_the_same_run(tmp_path):
    straight, f_straight = _image_fit(None, 20)
    straight.run()
    first, _ = _image_fit(tmp_path / "ckpt", 10)
    first.run()
    second, f_resumed = _image_fit(tmp_path / "ckpt", 20)
    second.resume()
    assert second.step == 10
    second.run()
    assert second.step == 20
    for a, b in zip(f_straight.parameters(), f_resumed.parameters()):
        assert torch.equal(a, b)  # same Adam state, same random batches


def test_config_json_and_rerun(sphere_capture, tmp_path, capsys):
    tiny = ["--field-options", "n_levels=4", "log2_hashmap_size=12", "hidden=16", "--grid-resolution", "16"]
    out = tmp_path / "a"
    assert main(["fit", str(sphere_capture), "--out", str(out), "--steps", "3", "--quiet", *tiny]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 3 and cfg["lr"] == 1e-2 and cfg["samples_per_step"] == 1 << 16  # resolved defaults
    assert cfg["field_options"] == {"n_levels": 4, "log2_hashmap_size": 12, "hidden": 16}
    out2 = tmp_path / "b"
    assert main(["fit", "--config", str(out / "config.json"), "--out", str(out2), "--steps", "2", "--quiet"]) == 0
    cfg2 = json.loads((out2 / "config.json").read_text())
    assert cfg2 == {**cfg, "out": str(out2), "steps": 2}  # the file's options, the flags given on top
    assert json.loads((out2 / "metrics.json").read_text())["steps"] == 2
    capsys.readouterr()
    for i, (change, needle) in enumerate([({"stepz": 3}, "stepz"), ({"steps": "3"}, "steps"),
                                          ({"max_seconds": -1.0}, "--max-seconds")]):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(json.dumps({**cfg, **change}))
        assert main(["fit", "--config", str(bad), "--out", str(tmp_path / "c"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nfkit: error:") and needle in err[0], err


def test_surface_objective_learns_a_sphere(sphere_capture):
    from nfkit.datasets import load_dataset
    from nfkit.trainer import FitConfig, Trainer

    train = load_dataset(str(sphere_capture), "train")
    cfg = FitConfig(data=str(sphere_capture), out="/nonexistent", field="neus", steps=30, samples_per_step=4096,
                    grid_resolution=16, device="cpu", field_options={"n_levels": 4, "log2_hashmap_size": 12})
    tr = Trainer(cfg, train, None, progress=False)
    assert type(tr.objective).__name__ == "SurfaceObjective"
    first = tr.train_step()
    assert {"rgb", "eikonal", "mask"} <= set(first)
    grads = [p.grad for p in tr.field.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)  # the losses reach the field
    losses = [first["total"]]
    for _ in range(29):
        tr.step += 1
        losses.append(tr.train_step()["total"])
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    assert tr.opts.cos_anneal_ratio == 1.0  # annealed over the first 10 % of the run


def test_fit_neus_writes_field_mesh_and_metrics(sphere_capture, tmp_path, monkeypatch):
    """`nfkit fit DATA --field neus`: field file, held-out PSNR/SSIM and a watertight DIR/mesh.ply in input
    coordinates (the capture's sphere has radius 0.6 about the origin; after 30 steps the surface is near it)."""
    import numpy as np
    import trimesh

    import nfkit.apps.fit_scene as fit_scene
    from nfkit import fields

    monkeypatch.setattr(fit_scene, "MESH_RESOLUTION", 48)
    out = tmp_path / "o"
    args = ["fit", str(sphere_capture), "--out", str(out), "--field", "neus", "--steps", "30", "--quiet",
            "--samples-per-step", "4096", "--grid-resolution", "16", "--field-options", "n_levels=4",
            "log2_hashmap_size=12"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["psnr"] > 15 and 0 < m["ssim"] <= 1 and m["steps"] == 30
    assert fields.read_header(out / "field.safetensors")["kind"] == "sdf"
    mesh = trimesh.load(out / "mesh.ply")
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert mesh.is_watertight and abs(float(np.median(r)) - 0.6) < 0.1, float(np.median(r))
