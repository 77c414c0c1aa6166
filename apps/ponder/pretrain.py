"""Pretraining by rendering (PonderV2): :class:`PonderObjective` for the shared loop (:mod:`nfkit.loop`).

Per step: ``batch`` random training scenes; each scene's cloud loses ``dropout`` (80 %) of its points
(:func:`~.encoder.random_dropout`), the encoder builds its volume, and ``rays_per_view`` random pixels with valid
depth of each of its RGB-D frames are rendered (:meth:`~.render.PonderModel.render`). Terms (weights as upstream):

* ``rgb`` (10): L1 between rendered and observed colour;
* ``depth`` (1): L1 between rendered and observed ray distance (plane depth / (d . camera forward));
* ``sdf`` (10): samples within the truncation band |t - D| <= tau: |f(x) - (D - t)|;
* ``free`` (1): samples in front, t < D - tau: ReLU(tau - f(x));
* ``eikonal`` (0.01): (|grad f| - 1)^2 at the samples;
* ``semantic`` (0.1, the semantic arm only): the L2-normalised rendered semantic feature against fixed random unit
  class codes (in place of CLIP text embeddings), logits ŝ·Cᵀ / 0.07, cross-entropy to the pixel's class.

NeuS cosine annealing over the first 10 % of the run. Adam through the loop (upstream: SGD + OneCycle at 2000
epochs; Adam trains the small CPU model in far fewer steps). :func:`depth_error` renders the held-out frames'
pixels of a fixed set of test scenes (full clouds, no dropout): the mean absolute depth error over pixels with
valid depth, logged by :func:`pretrain` every ``eval_every`` steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nfkit.cameras import Cameras, pixel_rays
from nfkit.loop import Loop, Objective, Schedule

from .encoder import random_dropout


@dataclass
class PretrainConfig:
    steps: int = 400
    batch: int = 2  # scenes per step
    rays_per_view: int = 96
    lr: float = 2e-3
    lr_final: float = 0.1
    dropout: float = 0.8  # fraction of input points dropped
    truncation: float = 0.05
    w_rgb: float = 10.0
    w_sdf: float = 10.0
    w_depth: float = 1.0
    w_free: float = 1.0
    w_eikonal: float = 0.01
    w_semantic: float = 0.0  # > 0: the semantic arm (0.1 upstream)
    sem_dim: int = 32
    temperature: float = 0.07
    eval_every: int = 100
    eval_scenes: int = 8
    seed: int = 0


def frame_rays(data: dict, scenes: torch.Tensor, n_per_view: int, gen: torch.Generator | None):
    """Random pixels with valid depth of every frame of ``scenes`` [B]: rays_o, rays_d [B, R, 3], ray distance
    [B, R], rgb [B, R, 3], class [B, R] with R = V * n_per_view (pixels drawn with repetition; all of them, in order,
    when ``n_per_view`` is 0 and a frame is fully valid)."""
    outs = []
    _, v, h, w = data["depth"].shape
    for s in scenes.tolist():
        o_all, d_all, dist_all, rgb_all, cls_all = [], [], [], [], []
        for i in range(v):
            valid = (data["depth"][s, i] > 0).reshape(-1).nonzero()[:, 0]
            if len(valid) == 0:  # no pixel with depth: any pixels (their zero distance masks every term)
                valid = torch.arange(h * w)
            if n_per_view:
                valid = valid[torch.randint(len(valid), (n_per_view,), generator=gen)]
            cams = Cameras(data["c2w"][s, i][None], *[data["intrinsics"][s, i, j][None] for j in range(4)], w, h)
            o, d = pixel_rays(cams, torch.zeros_like(valid), valid % w, valid // w)
            zdir = (d * -cams.c2w[0, :3, 2]).sum(-1)
            o_all.append(o)
            d_all.append(d)
            dist_all.append(data["depth"][s, i].reshape(-1)[valid] / zdir)
            rgb_all.append(data["rgb"][s, i].reshape(-1, 3)[valid])
            cls_all.append(data["seg"][s, i].reshape(-1)[valid])
        outs.append([torch.cat(a) for a in (o_all, d_all, dist_all, rgb_all, cls_all)])
    return [torch.stack(x) for x in zip(*outs)]


def class_codes(n_classes: int, dim: int, seed: int = 1234) -> torch.Tensor:
    """Fixed random unit class codes [K, dim] (stand-ins for CLIP text embeddings)."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)


def render_losses(out: dict, dist, rgb, cls, cfg: PretrainConfig, codes=None) -> dict:
    """Weighted terms (module docstring) of one render ``out`` against ray distance [B, R], rgb [B, R, 3], class
    [B, R]."""
    valid = out["valid"] & (dist > 0)
    m = valid.float()
    n = m.sum().clamp_min(1.0)
    terms = {"rgb": cfg.w_rgb * ((out["rgb"] - rgb).abs().mean(-1) * m).sum() / n,
             "depth": cfg.w_depth * ((out["depth"] - dist).abs() * m).sum() / n}
    t, f = out["t"], out["sdf"]
    gap = dist[..., None] - t
    band = (gap.abs() <= cfg.truncation) & valid[..., None]
    front = (gap > cfg.truncation) & valid[..., None]
    terms["sdf"] = cfg.w_sdf * ((f - gap).abs() * band).sum() / band.sum().clamp_min(1)
    terms["free"] = cfg.w_free * (F.relu(cfg.truncation - f) * front).sum() / front.sum().clamp_min(1)
    terms["eikonal"] = cfg.w_eikonal * ((out["grad"].norm(dim=-1) - 1.0) ** 2).mean()
    if codes is not None and out["sem"] is not None and cfg.w_semantic > 0:
        ok = valid & (cls < codes.shape[0])
        logits = F.normalize(out["sem"][ok], dim=-1) @ codes.T / cfg.temperature
        terms["semantic"] = cfg.w_semantic * F.cross_entropy(logits, cls[ok])
    return terms


class PonderObjective(Objective):
    """The multi-scene rendering objective: the loop's ``field`` is the whole :class:`~.render.PonderModel`."""

    desc = "ponder pretrain"

    def __init__(self, model, data: dict, cfg: PretrainConfig, n_classes: int):
        self.field, self.data, self.cfg = model, data, cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.codes = class_codes(n_classes, cfg.sem_dim) if cfg.w_semantic > 0 else None
        self.cos_anneal = 1.0

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.field.parameters()), "lr": lr, "weight_decay": 0.0}]

    def before_step(self, step: int, progress: float) -> None:
        self.cos_anneal = min(1.0, progress / 0.1)

    def losses(self, step: int, progress: float) -> dict:
        d, cfg = self.data, self.cfg
        s = torch.randint(d["points"].shape[0], (cfg.batch,), generator=self.gen)
        mask = random_dropout(d["points"].shape[1], cfg.batch, 1.0 - cfg.dropout, self.gen)
        feats = torch.cat([d["colors"][s], d["normals"][s]], -1)
        vol = self.field.encoder(d["points"][s], feats, mask)
        o, dirs, dist, rgb, cls = frame_rays(d, s, cfg.rays_per_view, self.gen)
        out = self.field.render(vol, o, dirs, self.cos_anneal)
        return render_losses(out, dist, rgb, cls, cfg, self.codes)

    def generators(self) -> dict:
        return {"ponder": self.gen}


@torch.no_grad()
def depth_error(model, data: dict, n_scenes: int, rays_per_view: int = 256) -> float:
    """Mean |rendered - observed| ray distance over valid pixels of the first ``n_scenes`` scenes' frames (a fixed
    pixel draw, full clouds), in scene units."""
    gen = torch.Generator().manual_seed(0)
    errs = []
    for s in range(min(n_scenes, data["points"].shape[0])):
        idx = torch.tensor([s])
        feats = torch.cat([data["colors"][idx], data["normals"][idx]], -1)
        model.eval()
        vol = model.encoder(data["points"][idx], feats)
        o, dirs, dist, _, _ = frame_rays(data, idx, rays_per_view, gen)
        out = model.render(vol, o, dirs, 1.0, stratified=False)
        ok = out["valid"] & (dist > 0)
        errs.append((out["depth"] - dist).abs()[ok])
    model.train()
    return float(torch.cat(errs).mean())


def pretrain(model, train: dict, test: dict | None, cfg: PretrainConfig, n_classes: int, progress: bool = False,
             log=None) -> dict:
    """Pretrain ``model`` in place by the loop; returns ``{"steps", "seconds", "depth_curve": [[step, err], ...],
    "last": losses}``. ``log(step, err)`` is called at every held-out evaluation."""
    obj = PonderObjective(model, train, cfg, n_classes)
    loop = Loop(obj, Schedule(steps=cfg.steps, lr=cfg.lr, lr_final=cfg.lr_final, warmup=min(50, cfg.steps // 10)),
                progress=progress)
    curve = []

    def evaluate(lp):
        if test is None or cfg.eval_every <= 0:
            return
        if lp.step == 1 or lp.step % cfg.eval_every == 0 or lp.done():
            err = depth_error(model, test, cfg.eval_scenes)
            curve.append([lp.step, err])
            if log is not None:
                log(lp.step, err)

    if test is not None and cfg.eval_every > 0:
        err0 = depth_error(model, test, cfg.eval_scenes)
        curve.append([0, err0])
        if log is not None:
            log(0, err0)
    loop.run(callback=evaluate)
    last = {k: v for k, v in loop.last_stats.items() if isinstance(v, float) and math.isfinite(v)}
    return {"steps": loop.step, "seconds": loop.elapsed, "depth_curve": curve, "last": last}
