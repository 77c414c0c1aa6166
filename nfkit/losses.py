"""Loss terms as pure functions (no state, no weights: objectives weight and sum them, :mod:`nfkit.loop`).

Shapes: ``pred``/``target`` [R, C]; ``gradients`` [S, 3] (∇f of an SDF, with graph); ``opacity`` [R] in [0, 1];
``mask`` [R] in [0, 1] (1: the object).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element."""
    return torch.mean((pred - target) ** 2)


def eikonal(gradients: torch.Tensor) -> torch.Tensor:
    """Eikonal term of IGR / NeuS: mean of (‖∇f‖ - 1)² over the points; 0 for no points (keeping the graph)."""
    if gradients.shape[0] == 0:
        return gradients.sum() * 0.0
    return torch.mean((gradients.norm(dim=-1) - 1.0) ** 2)


def mask_bce(opacity: torch.Tensor, mask: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Binary cross-entropy between a ray's rendered opacity and the pixel's mask (NeuS's mask loss); the opacity
    is clamped to [eps, 1 - eps] so that an empty or saturated ray keeps a finite loss."""
    return F.binary_cross_entropy(opacity.clamp(eps, 1.0 - eps), mask.to(opacity.dtype))


def curvature(gradients: torch.Tensor, gradients_near: torch.Tensor) -> torch.Tensor:
    """Smoothness of the normals (as NeuS2 / Neuralangelo's curvature proxy): mean squared difference between the
    unit gradients at points [S, 3] and at nearby jittered points [S, 3]."""
    if gradients.shape[0] == 0:
        return gradients.sum() * 0.0
    n0 = F.normalize(gradients, dim=-1)
    n1 = F.normalize(gradients_near, dim=-1)
    return torch.mean(((n0 - n1) ** 2).sum(-1))
