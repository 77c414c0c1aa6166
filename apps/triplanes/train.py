"""Training and running the classifiers on a fitted bank; classifier files.

Training follows upstream's recipe at CPU scale: AdamW (weight decay 1e-3) with a one-cycle schedule peaking at
``lr``, cross-entropy, a fixed number of epochs, the last model kept (upstream picks the best validation epoch; no
validation split here). A classifier file is safetensors (the state dict) whose metadata holds the format, the
:class:`TrainConfig`, the bank's :class:`~nfkit.apps.triplanes.bank.FitConfig`, the class names and the input
sizes, so :func:`load_classifier` rebuilds it and ``nfkit triplanes classify`` fits new shapes the same way.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nfkit.apps.triplanes.bank import FitConfig, decoder_shapes, flat_weights
from nfkit.apps.triplanes.classifiers import (INPUT_KIND, build_model, center_crop, plane_input, random_resized_crop,
                                              random_rotate_z)
from nfkit.atomic import atomic_path
from nfkit.errors import FieldFileError, NfkitError

FORMAT = "nfkit-triplane-classifier"


@dataclass
class TrainConfig:
    """Options of ``nfkit triplanes train`` (saved in the classifier file)."""

    model: str = "transformer"  # transformer | cnn | mlp | pointnet
    epochs: int = 40
    batch: int = 64
    lr: float = 1e-3  # one-cycle peak (upstream: 1e-4 over 150 epochs at batch 256)
    weight_decay: float = 1e-3
    seed: int = 0
    crop: int = 30  # random resized crop (training) / centre crop (test) of the planes
    # smallest crop area fraction: upstream's 0.08 (torchvision's) lost 7-10 points of transformer accuracy with
    # 12-15 training shapes a class (0.875 -> 0.944 procedural, 0.778 -> 0.878 real arm with rotate_z)
    crop_min_area: float = 0.5
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    points: int = 512  # PointNet: points per shape (a random subset each step in training)
    rotate_z: bool = False  # training: random rotation about z (planes: multiples of 90 degrees; points: any angle)

    def check(self, resolution: int) -> "TrainConfig":
        if self.model not in INPUT_KIND:
            raise NfkitError(f"--model: expected one of {', '.join(INPUT_KIND)}, got {self.model!r}")
        if not 1 <= self.crop <= resolution:
            raise NfkitError(f"--crop {self.crop}: expected 1 to the plane resolution ({resolution})")
        if self.d_model % self.heads:
            raise NfkitError(f"--d-model {self.d_model} must be a multiple of --heads {self.heads}")
        for name in ("epochs", "batch", "points", "layers", "heads"):
            if int(getattr(self, name)) < 1:
                raise NfkitError(f"--{name.replace('_', '-')}: expected a positive integer")
        if not 0 < self.crop_min_area <= 1:
            raise NfkitError(f"--crop-min-area: expected a value in (0, 1], got {self.crop_min_area}")
        return self


def model_inputs(tensors: dict, fit_cfg: FitConfig, model: str) -> torch.Tensor:
    """The raw input of ``model`` for every shape of a bank selection: planes [N, 3C, R, R] (normalised), weights
    [N, D] or points [N, M, 3]."""
    kind = INPUT_KIND[model]
    if kind == "planes":
        return plane_input(tensors["planes"])
    if kind == "weights":
        return flat_weights(tensors, fit_cfg)
    return tensors["points"]


def training_inputs(tensors: dict, fit_cfg: FitConfig, cfg: "TrainConfig") -> torch.Tensor:
    """What :func:`batch_view` reads in training: as :func:`model_inputs`, except the raw planes [N, 3, C, R, R]
    when they are rotated (a rotation must come before the per-location normalisation)."""
    if cfg.rotate_z and INPUT_KIND[cfg.model] == "planes":
        return tensors["planes"]
    return model_inputs(tensors, fit_cfg, cfg.model)


def rotate_points_z(pts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """points [B, M, 3], each shape turned by its own uniform random angle about z."""
    a = torch.rand(pts.shape[0], generator=generator) * (2 * math.pi)
    c, s = a.cos()[:, None], a.sin()[:, None]
    x, y = pts[..., 0], pts[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y, pts[..., 2]], -1)


def batch_view(x: torch.Tensor, model: str, cfg: TrainConfig, train: bool, g: torch.Generator | None = None):
    """One batch as the model sees it: crops for the plane models (raw planes [B, 3, C, R, R] are rotated and
    normalised first), a point subset (+ scale jitter, rotation) for PointNet."""
    kind = INPUT_KIND[model]
    if kind == "planes":
        if x.dim() == 5:
            x = plane_input(random_rotate_z(x, g) if train and cfg.rotate_z else x)
        return (random_resized_crop(x, cfg.crop, (cfg.crop_min_area, 1.0), generator=g) if train
                else center_crop(x, cfg.crop))
    if kind == "points":
        m = min(cfg.points, x.shape[1])
        if not train:
            return x[:, :m]
        idx = torch.stack([torch.randperm(x.shape[1], generator=g)[:m] for _ in range(x.shape[0])])
        pts = x.gather(1, idx[..., None].expand(-1, -1, 3))
        if cfg.rotate_z:
            pts = rotate_points_z(pts, g)
        return pts * (0.9 + 0.2 * torch.rand(x.shape[0], 1, 3, generator=g))
    return x


def input_dims(tensors: dict, fit_cfg: FitConfig) -> dict:
    """{'channels': 3C, 'weights': D (the flattened per-shape decoder)}."""
    return {"channels": 3 * fit_cfg.channels, "weights": sum(math.prod(s) for s in decoder_shapes(fit_cfg).values())}


def train_classifier(tensors: dict, fit_cfg: FitConfig, n_classes: int, cfg: TrainConfig, progress: bool = False):
    """Train on a bank selection (``tensors`` with ``labels``). Returns (model in eval mode, stats)."""
    from nfkit.progress import progress_bar

    cfg.check(fit_cfg.resolution)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    x, y = training_inputs(tensors, fit_cfg, cfg), tensors["labels"]
    model = build_model(cfg.model, n_classes, input_dims(tensors, fit_cfg), cfg)
    if cfg.model == "mlp":
        model.mean.copy_(x.mean(0))
        model.std.copy_(x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(x[0]))
    n = len(y)
    steps_per_epoch = -(-n // cfg.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    bar = progress_bar(total=cfg.epochs, unit="epoch", desc=f"train {cfg.model}", disable=not progress)
    t0 = time.perf_counter()
    model.train()
    loss = torch.zeros(())
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch):
            idx = perm[s: s + cfg.batch]
            if len(idx) < 2 and n > 1:  # batch norm needs two samples
                continue
            loss = F.cross_entropy(model(batch_view(x[idx], cfg.model, cfg, True, g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.update(1)
        bar.set_postfix_str(f"loss {loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model, {"seconds": time.perf_counter() - t0, "final_loss": float(loss.detach()), "train_shapes": n}


@torch.no_grad()
def logits_of(model, x: torch.Tensor, name: str, cfg: TrainConfig, chunk: int = 256) -> torch.Tensor:
    """Logits [N, classes] of raw inputs x (as :func:`model_inputs`), test-time view."""
    model.eval()
    return torch.cat([model(batch_view(c, name, cfg, False)) for c in x.split(chunk)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


DECODER_PREFIX = "fit_decoder."  # a shared-decoder bank's decoder, carried so classify fits new shapes against it


def save_classifier(path, model, cfg: TrainConfig, fit_cfg: FitConfig, classes, dims: dict, info=None,
                    decoder: dict | None = None) -> Path:
    """The model's state dict (+ the bank's shared ``decoder`` tensors, when it has one) as safetensors, the
    configs, classes and input sizes as JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "train_config": json.dumps(asdict(cfg)), "fit_config": json.dumps(asdict(fit_cfg)),
            "classes": json.dumps(list(classes)), "dims": json.dumps(dims), "info": json.dumps(info or {})}
    with atomic_path(path) as tmp:
        state = {**model.state_dict(), **{DECODER_PREFIX + k: v for k, v in (decoder or {}).items()}}
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    return path


def load_classifier(path):
    """(model in eval mode, TrainConfig, FitConfig, classes, shared decoder tensors or None) from a classifier file;
    one-line error otherwise."""
    from nfkit.tensor_files import read_tensor_file

    state, meta = read_tensor_file(path, FORMAT, "tri-plane classifier file", "nfkit triplanes train")
    cfg = TrainConfig(**json.loads(meta["train_config"]))
    fit_cfg = FitConfig(**json.loads(meta["fit_config"]))
    classes = json.loads(meta["classes"])
    model = build_model(cfg.model, len(classes), json.loads(meta["dims"]), cfg)
    decoder = {k[len(DECODER_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(DECODER_PREFIX)}
    if fit_cfg.decoder == "shared" and not decoder:
        raise FieldFileError(f"{path}: its bank has a shared decoder, which the file lacks")
    model.load_state_dict(state)
    model.eval()
    return model, cfg, fit_cfg, classes, decoder or None
