"""Image metrics. PSNR on [0, 1] images; SSIM is kornia's (11x11 Gaussian window, sigma 1.5), as torchmetrics'.

kornia is a dev/test extra, not a core dependency: without it :func:`ssim` uses :func:`ssim_torch`, the same
formula in plain torch (reflect padding, c1 = 0.01^2, c2 = 0.03^2, eps 1e-12; agrees with kornia to ~1e-6).
"""
from __future__ import annotations

import torch


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """pred, gt: [H, W, 3] in [0, 1] (same device) -> dB."""
    mse = torch.mean((pred.clamp(0, 1) - gt) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def ssim_torch(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM map of a, b: [B, C, H, W] in [0, 1] (float) -> [B, C, H, W]; kornia's ``ssim(a, b, 11)`` without kornia."""
    import torch.nn.functional as F

    x = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    c = a.shape[1]
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(t):
        p = window // 2
        return F.conv2d(F.pad(t, (p, p, p, p), mode="reflect"), k, groups=c)

    mu1, mu2 = blur(a), blur(b)
    s11, s22, s12 = blur(a * a) - mu1 * mu1, blur(b * b) - mu2 * mu2, blur(a * b) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2) + 1e-12)


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """pred, gt: [H, W, 3] in [0, 1] (same device) -> mean SSIM (kornia's when installed, else :func:`ssim_torch`)."""
    a = pred.clamp(0, 1).permute(2, 0, 1)[None].float()
    b = gt.permute(2, 0, 1)[None].float()
    try:
        from kornia.metrics import ssim as kssim
    except ImportError:
        return float(ssim_torch(a, b).mean())
    return float(kssim(a, b, 11).mean())
