"""Held-out view evaluation: render, compare (PSNR, SSIM, LPIPS when available locally), and write each render
beside its ground truth. Shows a per-view progress bar (tqdm, with ETA) on stderr: a full-resolution view of a
real capture takes seconds to minutes on a CPU."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from nfkit.metrics import psnr, ssim
from nfkit.renderers.background import render_image_bg

WHITE = torch.ones(3)
# torchvision's AlexNet weights, which the `lpips` package loads (and would otherwise download).
LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"


def eval_background(data) -> torch.Tensor:
    """RGBA data is evaluated on white (the NeRF-synthetic convention); a field with a background model
    (unbounded captures) uses its own background instead (see :func:`render_image_bg`)."""
    return WHITE


def lpips_metric():
    """``(fn, None)`` with ``fn(pred, gt) -> float`` (LPIPS, AlexNet) when the ``lpips`` package and its weights
    are available locally (no download is ever attempted), else ``(None, why)``."""
    if importlib.util.find_spec("lpips") is None:
        return None, "LPIPS not computed: the 'lpips' package is not installed (it needs torchvision)"
    hub = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE
    if not hub.is_file():
        return None, f"LPIPS not computed: the AlexNet weights are not available locally ({hub})"
    try:
        import lpips

        net = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # noqa: BLE001  (a broken optional install must not stop the evaluation)
        return None, f"LPIPS not computed: {type(e).__name__}: {' '.join(str(e).split())[:100]}"

    @torch.no_grad()
    def fn(pred, gt) -> float:
        a, b = (t.permute(2, 0, 1)[None].float() * 2 - 1 for t in (pred, gt))
        return float(net(a, b).item())

    return fn, None


def _progress(n: int, enabled: bool):
    from nfkit.progress import progress_bar

    return progress_bar(total=n, desc="nfkit: evaluating views", unit="view", disable=not enabled or n == 0,
                        mininterval=1.0, leave=False)


@torch.no_grad()
def evaluate(field, grid, data, opts, render_dir: Path | None = None, max_views: int = 0, progress: bool = True,
             lpips: bool = False) -> dict:
    """Render the views of ``data`` (all, or the first ``max_views``) -> {'psnr', 'ssim', 'n_views', 'per_view'}
    (with ``lpips``: also 'lpips', None with an 'lpips_note' when it is not available locally).

    ``progress``: a per-view bar with ETA on stderr (tqdm)."""
    from nfkit.datasets import composite

    field.eval()
    n = len(data.cameras) if max_views <= 0 else min(max_views, len(data.cameras))
    bg = eval_background(data)
    lp_fn, lp_note = lpips_metric() if lpips else (None, None)
    per = []
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    with _progress(n, progress) as bar:
        for i in range(n):
            out = render_image_bg(field, grid, data.cameras, i, opts, bg)
            gt = composite(data.images[i], bg)
            pred = out["rgb"].clamp(0, 1)
            row = {"name": data.names[i], "psnr": psnr(pred, gt), "ssim": ssim(pred, gt)}
            if lp_fn is not None:
                row["lpips"] = lp_fn(pred, gt)
            per.append(row)
            if render_dir is not None:
                import imageio.v3 as iio

                side = torch.cat([gt, pred], 1)
                stem = Path(data.names[i]).stem
                iio.imwrite(render_dir / f"{i:03d}_{stem}.png", (side * 255 + 0.5).clamp(0, 255).byte().numpy())
            bar.update(1)
    if not per:
        return {"n_views": 0}
    res = {"psnr": sum(p["psnr"] for p in per) / len(per), "ssim": sum(p["ssim"] for p in per) / len(per),
           "n_views": len(per), "per_view": per}
    if lpips:
        res["lpips"] = None if lp_fn is None else sum(p["lpips"] for p in per) / len(per)
        if lp_note:
            res["lpips_note"] = lp_note
    return res
