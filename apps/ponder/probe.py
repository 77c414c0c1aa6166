"""Downstream per-point semantic segmentation: linear probe on frozen features, few-scene fine-tune, mIoU.

* :func:`encoder_features`: per-point features of a (frozen) encoder: its output volume read trilinearly at the
  points (full clouds, no dropout) -> [S, N, C].
* :func:`handcrafted_features`: the baseline's per-point features [S, N, 10]: xyz, colour, normal and the height
  above the cloud's lowest point.
* :func:`linear_probe`: multinomial logistic regression on standardised features (full-batch L-BFGS, L2 weight
  ``l2``), trained on every training point, scored on test scenes.
* :func:`finetune`: encoder + linear head trained end to end by cross-entropy on ``n_scenes`` labelled scenes.
* :func:`miou`: mean over classes present in ground truth or prediction of TP / (TP + FP + FN).

Labels >= n_classes (e.g. :data:`IGNORE` = 255, unlabelled LiDAR points) are left out of training and scoring.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import random_dropout, sample_volume

IGNORE = 255


@dataclass
class ProbeConfig:
    probe_steps: int = 100  # L-BFGS iterations of the linear probe
    l2: float = 1e-4
    probe_points: int = 1024  # training points per scene for the probe (random subset)
    finetune_scenes: int = 10
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    finetune_batch: int = 2
    finetune_dropout: float = 0.2  # input point dropout while fine-tuning (Pointcept's default augmentation)
    seed: int = 0


def miou(pred: torch.Tensor, gt: torch.Tensor, n_classes: int) -> float:
    """Mean IoU over classes that occur in ``gt`` or ``pred`` (integer tensors of the same shape)."""
    pred, gt = pred.reshape(-1), gt.reshape(-1)
    keep = (gt >= 0) & (gt < n_classes)
    pred, gt = pred[keep], gt[keep]
    conf = torch.bincount(gt * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan")


def cloud_inputs(data: dict, idx) -> tuple:
    return data["points"][idx], torch.cat([data["colors"][idx], data["normals"][idx]], -1)


@torch.no_grad()
def encoder_features(encoder, data: dict, batch: int = 4) -> torch.Tensor:
    """Frozen per-point features [S, N, C] of every scene of ``data``."""
    encoder.eval()
    out = []
    for i in range(0, data["points"].shape[0], batch):
        idx = torch.arange(i, min(i + batch, data["points"].shape[0]))
        pts, feats = cloud_inputs(data, idx)
        out.append(sample_volume(encoder(pts, feats), pts, encoder.aabb))
    return torch.cat(out)


def handcrafted_features(data: dict) -> torch.Tensor:
    """[S, N, 10]: xyz, colour, normal, height above the scene's lowest point."""
    p = data["points"]
    height = p[..., 2:] - p[..., 2:].amin(1, keepdim=True)
    return torch.cat([p, data["colors"], data["normals"], height], -1)


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int, l2: float) -> nn.Linear:
    """Logistic regression [P, C] -> n_classes by L-BFGS on standardised inputs; the returned layer includes the
    standardisation."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    lin = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(z), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer
        w = lin.weight / sd
        b = lin.bias - (w * mu).sum(1)
    out = nn.Linear(x.shape[1], n_classes)
    out.weight.data.copy_(w)
    out.bias.data.copy_(b)
    return out


def linear_probe(f_train, y_train, f_test, y_test, n_classes: int, cfg: ProbeConfig) -> dict:
    """Linear probe on per-point features [S, N, C] with labels [S, N]; returns test mIoU and accuracy."""
    g = torch.Generator().manual_seed(cfg.seed)
    s, n, c = f_train.shape
    k = min(n, cfg.probe_points)
    pick = torch.rand(s, n, generator=g).argsort(1)[:, :k]
    x = f_train.gather(1, pick[..., None].expand(s, k, c)).reshape(-1, c)
    y = y_train.gather(1, pick).reshape(-1)
    keep = y < n_classes
    lin = fit_linear(x[keep], y[keep], n_classes, cfg.probe_steps, cfg.l2)
    with torch.no_grad():
        pred = lin(f_test.reshape(-1, c)).argmax(-1)
    gt = y_test.reshape(-1)
    pred, gt = pred[gt < n_classes], gt[gt < n_classes]
    return {"miou": miou(pred, gt, n_classes), "acc": float((pred == gt).float().mean())}


def finetune(encoder, train: dict, test: dict, n_classes: int, cfg: ProbeConfig, progress: bool = False) -> dict:
    """Fine-tune ``encoder`` (modified in place) + a linear head on ``cfg.finetune_scenes`` training scenes chosen by
    ``cfg.seed``; returns test mIoU and accuracy."""
    from nfkit.progress import progress_bar

    g = torch.Generator().manual_seed(cfg.seed)
    scenes = torch.randperm(train["points"].shape[0], generator=g)[: cfg.finetune_scenes]
    head = nn.Linear(encoder.cfg.out_channels, n_classes)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.finetune_steps)
    encoder.train()
    bar = progress_bar(total=cfg.finetune_steps, desc="ponder fine-tune", disable=not progress)
    for _ in range(cfg.finetune_steps):
        idx = scenes[torch.randint(len(scenes), (cfg.finetune_batch,), generator=g)]
        pts, feats = cloud_inputs(train, idx)
        mask = random_dropout(pts.shape[1], len(idx), 1.0 - cfg.finetune_dropout, g)
        f = sample_volume(encoder(pts, feats, mask), pts, encoder.aabb)
        y = train["labels"][idx].reshape(-1)
        y = torch.where(y < n_classes, y, torch.full_like(y, IGNORE))
        if not bool((y != IGNORE).any()):  # no labelled point in this batch
            bar.update(1)
            continue
        loss = F.cross_entropy(head(f).reshape(-1, n_classes), y, ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
    bar.close()
    f_test = encoder_features(encoder, test)
    with torch.no_grad():
        pred = head(f_test).argmax(-1)
    gt = test["labels"]
    pred, gt = pred[gt < n_classes], gt[gt < n_classes]
    return {"miou": miou(pred, gt, n_classes), "acc": float((pred == gt).float().mean()), "scenes": scenes.tolist()}


def handcrafted_finetune(train: dict, test: dict, n_classes: int, cfg: ProbeConfig) -> dict:
    """The handcrafted baseline in the few-label setting: a linear probe on the same ``finetune_scenes`` scenes."""
    g = torch.Generator().manual_seed(cfg.seed)
    scenes = torch.randperm(train["points"].shape[0], generator=g)[: cfg.finetune_scenes]
    sub = {k: train[k][scenes] for k in ("points", "colors", "normals", "labels")}
    return linear_probe(handcrafted_features(sub), sub["labels"], handcrafted_features(test), test["labels"],
                        n_classes, cfg)
