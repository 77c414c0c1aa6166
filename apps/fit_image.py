"""``nfkit fit-image IMAGE --out DIR --field X``: fit a 2-D field xy -> rgb to one image.

Writes ``DIR/metrics.json`` (psnr, ssim, steps, train_seconds, n_params, field, ...), ``DIR/field.safetensors``
(an image-signal field: ``nfkit.fields.load`` rebuilds it; query it with points [N, 2] in [0, 1]^2,
``((u + 0.5) / W, (v + 0.5) / H)``), ``DIR/original.png``, ``DIR/reconstruction.png`` and ``DIR/comparison.png``
(original | reconstruction). IMAGE is an image file or ``skimage:NAME`` (a photograph bundled with
scikit-image, e.g. ``skimage:astronaut``; no network needed).

Training: :func:`nfkit.objectives.fit_points` (the shared loop with a regression objective; re-exported here).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path

import torch

from nfkit.atomic import write_json_atomic
from nfkit.apps.cli_config import add_dataclass_args, dataclass_from_args
from nfkit.errors import NfkitError
from nfkit.images import load_image  # the one image reader
from nfkit.objectives import fit_points  # the regression loop lives in the library (re-exported here)

FAMILIES = ("mlp", "cam", "rbf", "triplane", "hashgrid")  # hashgrid: the hashgrid-coord family (image/shape signals)


@dataclass
class ImageFitConfig:
    """Options of ``nfkit fit-image`` (every field is a CLI flag)."""

    image: str = ""
    out: str = "outputs/fit_image"
    field: str = "mlp"
    steps: int = 2000
    max_seconds: float = 0.0  # 0: no time limit
    lr: float = 1e-2  # base rate; families scale it per parameter group (param_groups)
    batch: int = 1 << 14  # random pixels per step (0 or >= #pixels: full batch)
    max_side: int = 256  # downscale so the larger side is at most this (0: keep)
    holdout: bool = False  # train on every other pixel (x2 subsampling), report PSNR on all (CAM's generalisation)
    seed: int = 0
    field_options: dict = dc_field(default_factory=dict)


HELP = {
    "image": "image file (png/jpg/...) or skimage:NAME (a scikit-image sample photograph, e.g. skimage:astronaut)",
    "out": "output folder (metrics.json, field.safetensors, original.png, reconstruction.png, comparison.png)",
    "field": f"field family ({', '.join(FAMILIES)}; hashgrid builds the hashgrid-coord family)",
    "max_seconds": "stop after this many seconds of training (0: no limit)",
    "field_options": "field config overrides, e.g. hidden=64",
}


def coord_family(name: str) -> str:
    """CLI family name -> the registered family with image/shape signals (hashgrid -> hashgrid-coord)."""
    if name not in FAMILIES:
        raise NfkitError(f"--field: {name!r} has no image/shape signal; choose one of {', '.join(FAMILIES)}")
    return "hashgrid-coord" if name == "hashgrid" else name


def pixel_coords(h: int, w: int) -> torch.Tensor:
    """[H * W, 2] row-major pixel centres in [0, 1]^2: ((u + 0.5) / W, (v + 0.5) / H)."""
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(u.flatten() + 0.5) / w, (v.flatten() + 0.5) / h], -1)


@torch.no_grad()
def render_field_image(field, h: int, w: int, chunk: int = 1 << 16) -> torch.Tensor:
    """An image field evaluated at every pixel centre -> [H, W, 3] in [0, 1]."""
    xy = pixel_coords(h, w)
    return torch.cat([field(c).rgb for c in xy.split(chunk)]).reshape(h, w, 3).clamp(0, 1)


def fit_image(cfg: ImageFitConfig, img: torch.Tensor, progress: bool = False, callback=None):
    """Fit a fresh ``cfg.field`` image field to img [H, W, 3]. Returns (field, stats from :func:`fit_points`)."""
    from nfkit import fields

    family = coord_family(cfg.field)
    if cfg.steps <= 0:
        raise NfkitError(f"--steps must be positive, got {cfg.steps}")
    torch.manual_seed(cfg.seed)
    field = fields.build_field(family, {**cfg.field_options, "signal": "image"}, torch.tensor([[0.0] * 3, [1.0] * 3]))
    h, w = img.shape[:2]
    xy, rgb = pixel_coords(h, w), img.reshape(-1, 3)
    if cfg.holdout:
        v, u = xy[:, 1] * h - 0.5, xy[:, 0] * w - 0.5
        keep = ((u.round() % 2) == 0) & ((v.round() % 2) == 0)
        xy, rgb = xy[keep], rgb[keep]
    n, b = xy.shape[0], cfg.batch
    full = b <= 0 or b >= n

    def batch(step):
        if full:
            return xy, rgb
        i = torch.randint(0, n, (b,))
        return xy[i], rgb[i]

    def loss(f, x, y):
        return torch.mean((f(x).rgb - y) ** 2)

    stats = fit_points(field, batch, loss, cfg.steps, cfg.max_seconds, cfg.lr, callback, progress=progress,
                       desc=f"fit-image {cfg.field}", psnr=True)
    return field, stats


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit fit-image", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, ImageFitConfig, positional=("image",), help_text=HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(ns: argparse.Namespace) -> dict:
    import imageio.v3 as iio

    from nfkit import fields
    from nfkit.metrics import psnr, ssim

    cfg = dataclass_from_args(ImageFitConfig, ns)
    coord_family(cfg.field)
    img = load_image(cfg.image, cfg.max_side)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    field, stats = fit_image(cfg, img, progress=not ns.quiet)
    h, w = img.shape[:2]
    pred = render_field_image(field, h, w)
    field_path = fields.save(field, out / "field.safetensors",
                             info={"source": cfg.image, "width": w, "height": h, "steps": stats["steps"],
                                   "train_seconds": stats["train_seconds"]})
    to8 = lambda t: (t * 255 + 0.5).clamp(0, 255).byte().numpy()  # noqa: E731
    iio.imwrite(out / "original.png", to8(img))
    iio.imwrite(out / "reconstruction.png", to8(pred))
    iio.imwrite(out / "comparison.png", to8(torch.cat([img, pred], 1)))
    metrics = {
        "psnr": psnr(pred, img), "ssim": ssim(pred, img), "steps": stats["steps"],
        "train_seconds": round(stats["train_seconds"], 2), "n_params": sum(p.numel() for p in field.parameters()),
        "field": str(field_path), "family": cfg.field, "signal": "image", "width": w, "height": h,
        "config": asdict(cfg), "field_config": field.config_dict(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    summary = {k: metrics[k] for k in ("psnr", "ssim", "steps", "train_seconds", "n_params")}
    print(f"nfkit fit-image: {json.dumps(summary)}  -> {out}/metrics.json")
    return metrics


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
