"""Image metrics. PSNR on [0, 1] images; SSIM is kornia's (11x11 Gaussian window, sigma 1.5), as torchmetrics'."""
from __future__ import annotations

import torch


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """pred, gt: [H, W, 3] in [0, 1] -> dB."""
    mse = torch.mean((pred.clamp(0, 1) - gt) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """pred, gt: [H, W, 3] in [0, 1] -> mean SSIM."""
    from kornia.metrics import ssim as kssim

    a = pred.clamp(0, 1).permute(2, 0, 1)[None].float()
    b = gt.permute(2, 0, 1)[None].float()
    return float(kssim(a, b, 11).mean())
