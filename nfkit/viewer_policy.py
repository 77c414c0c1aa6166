"""Pure decision functions of the viewer's render loop (no torch, no viser: easy to test).

* :func:`moving_resolution`: while the camera moves, the image size that keeps a target frame rate given the
  measured throughput in rays per second (as nerfstudio's viewer: ``height = sqrt(rays_per_frame / aspect)``).
* :func:`static_resolution`: the full-resolution refinement once the camera has stopped.
* :func:`next_action`: the per-client state machine (render low-res while moving, refine to full resolution
  after :data:`STATIC_DELAY_S` without camera messages, idle once refined).
* :func:`update_rate`: exponential moving average of the measured rays per second.
* :func:`train_steps_per_render`: when the viewer is attached to a fit, how many training steps to run between
  two renders so that rendering takes about ``1 - train_util`` of the CPU.

Sizes are ``(width, height)`` in pixels; ``aspect`` is width / height.
"""
from __future__ import annotations

import math

STATIC_DELAY_S = 0.2  # no camera message for this long: the camera is "static", refine to full resolution
MIN_RES = 32
MULTIPLE = 8


def _clean(x: float, default: float) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) and x > 0 else default


def fit_size(height: float, aspect: float, max_res: int, min_res: int = MIN_RES, multiple: int = MULTIPLE):
    """``(width, height)`` for a requested height and aspect: the longer side shrunk to at most ``max_res``, the
    shorter grown to at least ``min_res`` (aspect kept), each side rounded to a multiple of ``multiple`` and
    finally clamped to ``[min_res, max_res]`` (the clamp wins over the rounding and, for extreme aspects, over
    the aspect)."""
    aspect = _clean(aspect, 1.0)
    lo = max(1, int(min_res))
    hi = max(lo, int(_clean(max_res, lo)))
    h = _clean(height, lo)
    w = h * aspect
    shrink = min(1.0, hi / max(w, h))
    w, h = w * shrink, h * shrink
    grow = max(1.0, lo / min(w, h))
    w, h = w * grow, h * grow
    snap = lambda v: min(hi, max(lo, int(round(v / multiple)) * multiple))  # noqa: E731
    return snap(w), snap(h)


def moving_resolution(rays_per_second: float, target_fps: float, aspect: float, max_res: int,
                      min_res: int = MIN_RES, multiple: int = MULTIPLE):
    """Image size while the camera moves: the largest frame that renders in ``1 / target_fps`` seconds at the
    measured ``rays_per_second``. ``height = sqrt(rays_per_frame / aspect)``, rounded to a multiple of
    ``multiple``, clamped so that the longer side is at most ``max_res`` and the shorter at least ``min_res``.
    Unknown throughput (0, NaN) gives the smallest size. Returns ``(width, height)``."""
    rate = _clean(rays_per_second, 0.0)
    fps = _clean(target_fps, 10.0)
    aspect = _clean(aspect, 1.0)
    if rate <= 0:
        return fit_size(min_res, aspect, max_res, min_res, multiple)
    height = math.sqrt(rate / fps / aspect)
    return fit_size(height, aspect, max_res, min_res, multiple)


def static_resolution(aspect: float, max_res: int, canvas_height: int | None = None, rays_per_second: float = 0.0,
                      budget_s: float = 0.0, min_res: int = MIN_RES, multiple: int = MULTIPLE):
    """Full-resolution image size when the camera is still: the longer side is ``max_res``, but never more
    pixels than the browser canvas (``canvas_height``) shows, nor (when both are given) more rays than
    ``rays_per_second * budget_s`` (a slow field, e.g. early in a fit, must not block for seconds).
    Returns ``(width, height)``."""
    aspect = _clean(aspect, 1.0)
    h = max_res / max(aspect, 1.0)
    if canvas_height:
        h = min(h, _clean(canvas_height, h))
    rate, budget = _clean(rays_per_second, 0.0), _clean(budget_s, 0.0)
    if rate > 0 and budget > 0:
        h = min(h, math.sqrt(rate * budget / aspect))
    return fit_size(h, aspect, max_res, min_res, multiple)


def update_rate(previous: float, n_rays: int, seconds: float, smoothing: float = 0.5) -> float:
    """EMA of rays per second: ``previous`` (0 = no estimate yet) updated with ``n_rays`` done in ``seconds``."""
    if seconds <= 0 or n_rays <= 0 or not math.isfinite(seconds):
        return previous
    rate = n_rays / seconds
    if previous <= 0 or not math.isfinite(previous):
        return rate
    return (1 - smoothing) * previous + smoothing * rate


def next_action(now: float, last_move: float, rendered_move: float, refined: bool,
                static_delay: float = STATIC_DELAY_S) -> str:
    """The render loop's next step for one client.

    now: current time (s); last_move: time of the latest camera/settings change; rendered_move: the
    ``last_move`` value that the latest finished frame showed; refined: whether that frame was full resolution.
    Returns ``"low"`` (the view changed since the last frame and the camera is still moving: render at the
    moving resolution), ``"high"`` (the camera has been still for ``static_delay`` seconds and the full-resolution
    frame is missing: refine) or ``"wait"``.
    """
    changed = last_move > rendered_move
    still = now - last_move >= static_delay
    if still and (changed or not refined):
        return "high"
    if changed:
        return "low"
    return "wait"


def train_steps_per_render(train_step_s: float, render_s: float, train_util: float = 0.85,
                           max_steps: int = 1000) -> int:
    """While attached to a fit and the camera is still: training steps between two renders, so that training
    gets about ``train_util`` of the CPU: ``N * train_step_s / (N * train_step_s + render_s) >= train_util``,
    i.e. ``N = ceil(render_s * util / (train_step_s * (1 - util)))``, at least 1 and at most ``max_steps``."""
    util = min(max(_clean(train_util, 0.85), 0.0), 0.99)
    t_train = _clean(train_step_s, 0.0)
    t_render = _clean(render_s, 0.0)
    if t_train <= 0:
        return 1 if t_render <= 0 else max_steps
    n = math.ceil(t_render * util / (t_train * (1 - util)))
    return int(min(max(n, 1), max_steps))
