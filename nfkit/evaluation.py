"""Held-out view evaluation: render, compare (PSNR, SSIM), and write each render beside its ground truth."""
from __future__ import annotations

from pathlib import Path

import torch

from nfkit.metrics import psnr, ssim
from nfkit.renderers.background import render_image_bg

WHITE = torch.ones(3)


def eval_background(data) -> torch.Tensor:
    """RGBA data is evaluated on white (the NeRF-synthetic convention); a field with a background model
    (unbounded captures) uses its own background instead (see :func:`render_image_bg`)."""
    return WHITE


@torch.no_grad()
def evaluate(field, grid, data, opts, render_dir: Path | None = None, max_views: int = 0) -> dict:
    """Render the views of ``data`` (all, or the first ``max_views``) -> {'psnr', 'ssim', 'n_views', 'per_view'}."""
    from nfkit.datasets import composite

    field.eval()
    n = len(data.cameras) if max_views <= 0 else min(max_views, len(data.cameras))
    bg = eval_background(data)
    per = []
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        out = render_image_bg(field, grid, data.cameras, i, opts, bg)
        gt = composite(data.images[i], bg)
        pred = out["rgb"].clamp(0, 1)
        per.append({"name": data.names[i], "psnr": psnr(pred, gt), "ssim": ssim(pred, gt)})
        if render_dir is not None:
            import imageio.v3 as iio

            side = torch.cat([gt, pred], 1)
            stem = Path(data.names[i]).stem
            iio.imwrite(render_dir / f"{i:03d}_{stem}.png", (side * 255 + 0.5).clamp(0, 255).byte().numpy())
    if not per:
        return {"n_views": 0}
    return {
        "psnr": sum(p["psnr"] for p in per) / len(per), "ssim": sum(p["ssim"] for p in per) / len(per),
        "n_views": len(per), "per_view": per,
    }
