"""Resuming training: the shared loop checkpoints an objective's other trained modules (``Objective.modules``), and
``nfkit wireframe --resume`` continues an interrupted run to the same result as an uninterrupted one."""
import json

import nfkit  # noqa: F401
import pytest
import torch

from nfkit.errors import NfkitError
from nfkit.loop import Loop, Objective, Schedule


class TwoModules(Objective):
    """An image field plus a second trained module (``head``, checkpointed through :meth:`modules`); random
    batches from torch's global generator."""

    def __init__(self, head_out: int = 2):
        from nfkit import fields

        torch.manual_seed(0)
        self.field = fields.build_field("mlp", {"hidden": 16, "n_layers": 2, "n_freqs": 3, "signal": "image"},
                                        torch.tensor([[0.0] * 3, [1.0] * 3]))
        self.head = torch.nn.Linear(3, head_out)

    def param_groups(self, lr):
        return [{"params": list(self.field.parameters())}, {"params": list(self.head.parameters())}]

    def losses(self, step, progress):
        xy = torch.rand(32, 2)
        return {"fit": (self.head(self.field(xy).rgb)[:, :1] - xy[:, :1] * xy[:, 1:]).pow(2).mean()}

    def modules(self):
        return {"head": self.head}


def _loop(obj, ckpt, steps):
    # constant rate: a 10-step run and the first half of a 20-step run take the same steps
    return Loop(obj, Schedule(steps=steps, lr=1e-2, lr_final=1.0, warmup=1), checkpoint_dir=ckpt)


def test_checkpoint_keeps_and_restores_the_objectives_modules(tmp_path):
    straight = TwoModules()
    _loop(straight, None, 20).run()
    first = TwoModules()
    _loop(first, tmp_path / "ckpt", 10).run()
    second = TwoModules()
    fresh = second.head.weight.detach().clone()
    loop = _loop(second, tmp_path / "ckpt", 20)
    loop.resume()
    assert loop.step == 10 and torch.equal(second.head.weight, first.head.weight)
    assert not torch.equal(second.head.weight, fresh)  # restored, not the fresh init
    loop.run()
    for a, b in zip(list(straight.field.parameters()) + list(straight.head.parameters()),
                    list(second.field.parameters()) + list(second.head.parameters())):
        assert torch.equal(a, b)  # same modules, Adam moments and random stream as the uninterrupted run
    other = TwoModules(head_out=3)  # a head of another shape: one-line error
    with pytest.raises(NfkitError, match="head does not fit"):
        _loop(other, tmp_path / "ckpt", 20).resume()


def _box_files(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from nfkit.apps.wireframe.oracle import oracle_lines, sharp_edges, write_hawp
    from nfkit.datasets.mesh_views import mesh_views, write_mesh_views

    views = mesh_views(trimesh.creation.box(extents=(1.0, 0.8, 0.6)), n_views=12, size=48, seed=1)
    data = tmp_path / "box"
    write_mesh_views(views, data)
    j, e = sharp_edges(views.mesh)
    write_hawp(tmp_path / "hawp", views.scene.names, oracle_lines(views.mesh, views.scene.cameras, j, e), 48, 48)
    return data, tmp_path / "hawp"


@pytest.mark.slow
def test_wireframe_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted at step 7 of 20 (Ctrl-C: checkpoint, exit 2), then ``--resume``: every trained tensor (field,
    occupancy grid, attraction head, junction latents) and the wireframe equal the uninterrupted run's, bit for
    bit (same Adam moments, same random stream)."""
    from nfkit import fields
    from nfkit.apps.cli import main
    from nfkit.apps.wireframe.objective import WireframeObjective

    torch.set_num_threads(1)
    data, hawp = _box_files(tmp_path)
    args = ["wireframe", str(data), "--lines", str(hawp), "--steps", "20", "--no-progress", "--min-views", "2"]
    assert main(args + ["--out", str(tmp_path / "straight")]) == 0

    calls = {"n": 0}
    original = WireframeObjective.after_step

    def interrupt_at_7(self, stats, seconds):
        original(self, stats, seconds)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(WireframeObjective, "after_step", interrupt_at_7)
    out = tmp_path / "resumed"
    assert main(args + ["--out", str(out)]) == 2  # interrupted: checkpoint saved, one-line error
    assert (out / "checkpoint" / "state.safetensors").is_file() and not (out / "wireframe.json").exists()
    monkeypatch.setattr(WireframeObjective, "after_step", original)
    assert main(args + ["--out", str(out), "--resume"]) == 0

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["steps"] == b["steps"] == 20
    fa, _, ea = fields.load(tmp_path / "straight" / "field.safetensors", return_extras=True)
    fb, _, eb = fields.load(out / "field.safetensors", return_extras=True)
    assert any(k.startswith("wireframe.head.") for k in ea) and any(k.startswith("wireframe.junctions.") for k in ea)
    assert sorted(ea) == sorted(eb)
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k
    for (k, x), (_, y) in zip(fa.state_dict().items(), fb.state_dict().items()):
        assert torch.equal(x, y), k
    wa = json.loads((tmp_path / "straight" / "wireframe.json").read_text())
    wb = json.loads((out / "wireframe.json").read_text())
    assert wa == wb


def test_wireframe_resume_without_a_checkpoint_is_one_line(tmp_path, capsys):
    from nfkit.apps.cli import main

    data, hawp = _box_files(tmp_path)
    rc = main(["wireframe", str(data), "--lines", str(hawp), "--steps", "5", "--no-progress", "--resume",
               "--out", str(tmp_path / "fresh")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("nfkit: error:")]
    assert rc == 2 and len(err) == 1 and "no checkpoint to resume from" in err[0], err
