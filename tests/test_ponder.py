"""nfkit ponder (PonderV2): voxelisation, U-Net shapes, the NeuS renderer on an analytic room, probes, CLI errors."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from nfkit.apps.ponder.encoder import (EncoderConfig, PointEncoder, UNet3D, sample_volume, scatter_mean,
                                       scatter_mean_reference)
from nfkit.apps.ponder.probe import ProbeConfig, handcrafted_features, linear_probe, miou
from nfkit.apps.ponder.render import PonderModel, RenderConfig
from nfkit.apps.ponder.rooms import RoomsConfig, load_rooms, make_room, scene_sdf, write_rooms

TINY = RoomsConfig(train=2, test=1, n_points=256, width=16, height=12)


def test_scatter_mean_matches_loop():
    g = torch.Generator().manual_seed(0)
    aabb = torch.tensor([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.0]])
    pts = torch.rand(2, 400, 3, generator=g) * torch.tensor([1.2, 1.2, 0.6]) - torch.tensor([0.6, 0.6, 0.55])
    pts[:, :50] = pts[:, 50:100]  # shared voxels
    feats = torch.randn(2, 400, 5, generator=g, dtype=torch.float64)
    grid = (7, 5, 3)
    vol = scatter_mean(pts, feats, aabb, grid)
    assert vol.shape == (2, 6, 3, 5, 7)
    for b in range(2):
        torch.testing.assert_close(vol[b], scatter_mean_reference(pts[b], feats[b], aabb, grid))
    keep = torch.rand(2, 400, generator=g) > 0.8  # the dropout mask equals dropping the points
    masked = scatter_mean(pts, feats, aabb, grid, keep)
    for b in range(2):
        torch.testing.assert_close(masked[b], scatter_mean_reference(pts[b][keep[b]], feats[b][keep[b]], aabb, grid))


@pytest.mark.parametrize("size", [(9, 7, 5), (5, 11, 3), (1, 3, 2)])
def test_unet_keeps_odd_shapes(size):
    net = UNet3D(4, 6, base=4, levels=3)
    x = torch.randn(2, 4, *size)
    y = net(x)
    assert y.shape == (2, 6, *size)
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    enc = PointEncoder(EncoderConfig(grid=(9, 7, 5), base=4))
    vol = enc(torch.rand(1, 50, 3) - 0.5, torch.rand(1, 50, 6))
    assert vol.shape == (1, 32, 5, 7, 9)


def test_sample_volume_reads_voxel_centres():
    aabb = torch.tensor([[0.0, 0.0, 0.0], [4.0, 3.0, 2.0]])
    vol = torch.arange(24.0).reshape(1, 1, 2, 3, 4)  # [B, C, Z, Y, X]
    x = torch.tensor([[[0.5, 0.5, 0.5], [3.5, 2.5, 1.5], [1.5, 0.5, 1.5]]])
    got = sample_volume(vol, x, aabb)[0, :, 0]
    torch.testing.assert_close(got, torch.tensor([0.0, 23.0, 13.0]), atol=1e-5, rtol=0)


class AnalyticRoom(PonderModel):
    """The renderer with the room's exact SDF in place of the decoded one."""

    def __init__(self, prims):
        super().__init__(EncoderConfig(), RenderConfig(n_uniform=64, n_importance=32))
        self.prims = prims
        with torch.no_grad():
            self.surface.variance.fill_(0.8)  # inv_s = e^8: a sharp surface

    def sdf(self, vol, x):
        f, _ = scene_sdf(self.prims, x.reshape(-1, 3).double())
        return f.float().reshape(x.shape[:2]), torch.zeros(*x.shape[:2], self.cfg.geo_features)


def test_renderer_gives_analytic_room_depth():
    from nfkit.apps.ponder.pretrain import frame_rays
    from nfkit.apps.ponder.rooms import room_primitives

    cfg = replace(TINY, width=32, height=24)
    scene = make_room(3, 0, cfg)
    prims = torch.tensor(room_primitives(np.random.default_rng([3, 0])))  # the same draw as make_room's
    data = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in scene.items()}
    data["rgb"] = data["rgb"].float() / 255
    data["seg"] = data["seg"].long()
    o, d, dist, _, _ = frame_rays(data, torch.tensor([0]), 0, None)
    model = AnalyticRoom(prims)
    with torch.no_grad():
        out = model.render(torch.zeros(1, 32, 2, 2, 2), o, d, stratified=False)
    err = (out["depth"] - dist).abs()[0]
    assert out["valid"].all()
    assert float(err.median()) < 0.005, float(err.median())
    assert float((err < 0.02).float().mean()) > 0.95
    assert float(out["opacity"].median()) > 0.99


def test_miou_by_hand():
    gt = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 2])
    # class 0: 1 / 2, class 1: 2 / 3, class 2: 1, class 3 absent everywhere (ignored)
    assert miou(pred, gt, 4) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


def test_probe_on_height_toy_reaches_100_percent():
    g = torch.Generator().manual_seed(0)

    def toy(s):
        pts = torch.rand(s, 500, 3, generator=g) - 0.5
        lab = torch.bucketize(pts[..., 2].contiguous(), torch.tensor([-0.2, 0.15]))  # 3 height bands
        return {"points": pts, "colors": torch.rand(s, 500, 3, generator=g), "normals": torch.randn(s, 500, 3,
                                                                                                    generator=g),
                "labels": lab}

    tr, te = toy(6), toy(3)
    res = linear_probe(handcrafted_features(tr), tr["labels"], handcrafted_features(te), te["labels"], 3,
                       ProbeConfig(probe_steps=200, l2=0.0))
    assert res["acc"] > 0.98 and res["miou"] > 0.96, res


def test_rooms_round_trip_and_labels(tmp_path):
    counts = write_rooms(replace(TINY, out=str(tmp_path / "rooms")))
    assert counts == {"train": 2, "test": 1}
    tr = load_rooms(tmp_path / "rooms", "train")
    assert tr["points"].shape == (2, 256, 3) and tr["rgb"].shape == (2, 3, 12, 16, 3)
    assert torch.isfinite(tr["points"]).all() and (tr["normals"].norm(dim=-1) - 1).abs().max() < 1e-3
    assert set(tr["labels"].unique().tolist()) <= set(range(6)) and 0 in tr["labels"].reshape(-1).tolist()
    assert (tr["depth"] > 0).float().mean() > 0.3
    again = make_room(0, 0, TINY)  # deterministic from (seed, index)
    assert np.array_equal(again["points"], tr["points"][0].numpy())


def _rooms_with(path, points):
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(path / "train.safetensors"))
    n = points.shape[1]
    arrays["points"] = points
    for k in ("colors", "normals"):
        arrays[k] = np.zeros_like(points)
    arrays["labels"] = np.zeros(points.shape[:2], np.uint8)
    save_file(arrays, str(path / "train.safetensors"))
    return n


@pytest.mark.parametrize("case", ["nan", "empty"])
def test_bad_clouds_one_line_exit_2(tmp_path, capsys, case):
    from nfkit.apps.cli import main

    data = tmp_path / "rooms"
    write_rooms(replace(TINY, out=str(data)))
    pts = np.zeros((2, 0, 3), np.float32) if case == "empty" else np.full((2, 8, 3), np.nan, np.float32)
    _rooms_with(data, pts)
    for argv in (["ponder", "probe", "random", str(data), "--quiet"],
                 ["ponder", "pretrain", str(data), "--out", str(tmp_path / "e.safetensors"), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nfkit: error:"), err
        assert ("no points" if case == "empty" else "NaN") in err[0]


def test_cli_end_to_end_tiny(tmp_path, capsys):
    from nfkit.apps.cli import main

    data, enc = tmp_path / "rooms", tmp_path / "enc.safetensors"
    assert main(["ponder", "make-rooms", "--out", str(data), "--train", "2", "--test", "1", "--n-points", "256",
                 "--width", "16", "--height", "12", "--quiet"]) == 0
    assert main(["ponder", "pretrain", str(data), "--out", str(enc), "--steps", "2", "--rays-per-view", "8",
                 "--eval-every", "1", "--eval-scenes", "1", "--semantic", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ponder", "probe", str(enc), str(data), "--probe-steps", "5", "--finetune-scenes", "2",
                 "--finetune-steps", "2", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= res["linear_probe"]["miou"] <= 1 and 0 <= res["finetune"]["miou"] <= 1
    assert main(["ponder", "probe", str(tmp_path / "nope.safetensors"), str(data), "--quiet"]) == 2


@pytest.mark.slow
def test_pretraining_lowers_heldout_depth_error(tmp_path):
    from nfkit.apps.ponder.pretrain import PretrainConfig, pretrain

    write_rooms(replace(TINY, out=str(tmp_path / "r"), train=6, test=2, n_points=1024, width=32, height=24))
    tr, te = load_rooms(tmp_path / "r", "train"), load_rooms(tmp_path / "r", "test")
    torch.manual_seed(0)
    model = PonderModel(EncoderConfig(), RenderConfig())
    res = pretrain(model, tr, te, PretrainConfig(steps=40, rays_per_view=32, eval_every=40, eval_scenes=2), 6)
    first, last = res["depth_curve"][0][1], res["depth_curve"][-1][1]
    assert last < 0.7 * first, res["depth_curve"]
