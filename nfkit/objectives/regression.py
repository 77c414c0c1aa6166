"""Coordinate regression (``fit-image``, ``fit-sdf``, ``bench/fields.py``): a field against targets at points.

``batch_fn(step)`` -> (inputs, target); ``loss_fn(field, inputs, target)`` -> scalar. :func:`fit_points` runs it on
the shared :class:`~nfkit.loop.Loop`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from nfkit.loop import Loop, Objective, Schedule


class RegressionObjective(Objective):
    """One loss term ``"fit"``: ``loss_fn(field, *batch_fn(step))``. Parameter groups: the field's own
    ``param_groups(lr)`` when it has them, else one group of every parameter. ``psnr``: the progress bar also
    shows the loss as a PSNR (an MSE of values in [0, 1])."""

    def __init__(self, field, batch_fn: Callable, loss_fn: Callable, desc: str = "fit", psnr: bool = False):
        self.field, self.batch_fn, self.loss_fn, self.desc, self.psnr = field, batch_fn, loss_fn, desc, psnr

    def param_groups(self, lr: float) -> list[dict]:
        f = self.field
        return f.param_groups(lr) if hasattr(f, "param_groups") else [{"params": list(f.parameters())}]

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        x, y = self.batch_fn(step)
        return {"fit": self.loss_fn(self.field, x, y)}

    def postfix(self, ema: dict) -> dict:
        post = {"loss": f"{ema['loss']:.3e}"}
        if self.psnr:
            post["psnr"] = f"{-10 * math.log10(max(ema['loss'], 1e-10)):.2f}"
        return post


def fit_points(field, batch_fn, loss_fn, steps: int, max_seconds: float = 0.0, lr: float = 1e-2,
               callback=None, warmup: int = 50, final_lr_factor: float = 0.03, progress: bool = False,
               desc: str = "fit", psnr: bool = False) -> dict:
    """Regression loop: ``batch_fn(step)`` -> (inputs, target); ``loss_fn(field, inputs, target)`` -> scalar loss.

    The shared loop (:class:`~nfkit.loop.Loop`): Adam, a linear warm-up over ``warmup`` steps, then exponential
    decay to ``final_lr_factor`` of the rate at the end (by steps, or by time when ``max_seconds`` binds first); a
    non-finite loss raises NfkitError. ``callback(step, elapsed, loss, field)`` runs after each step (untimed).
    ``progress``: the loop's progress bar, labelled ``desc`` (with the loss as a PSNR when ``psnr``).
    Returns {steps, train_seconds, loss}; the field is left in eval mode."""
    loop = Loop(RegressionObjective(field, batch_fn, loss_fn, desc, psnr),
                Schedule(steps=steps, max_seconds=max_seconds, lr=lr, lr_final=final_lr_factor, warmup=warmup),
                progress=progress)
    last = {"loss": float("nan")}

    def after(lp: Loop) -> None:
        last["loss"] = lp.last_stats["loss"]
        if callback is not None:
            callback(lp.step, lp.elapsed, last["loss"], field)

    loop.run(after)
    field.eval()
    return {"steps": loop.step, "train_seconds": loop.elapsed, "loss": last["loss"]}
