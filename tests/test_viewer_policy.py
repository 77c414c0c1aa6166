"""The viewer's pure policies: resolution from measured rays/s, the render state machine, CPU sharing with a fit."""
import math

import pytest

from nfkit.viewer_policy import (fit_size, moving_resolution, next_action, static_resolution, train_steps_per_render,
                                 update_rate)


@pytest.mark.parametrize("rate,fps,aspect", [(655_360, 10, 1.0), (2e6, 30, 16 / 9), (3e5, 10, 0.75), (1e5, 5, 2.0)])
def test_moving_resolution_meets_the_frame_budget(rate, fps, aspect):
    w, h = moving_resolution(rate, fps, aspect, max_res=2048)
    assert w % 8 == 0 and h % 8 == 0
    assert w / h == pytest.approx(aspect, rel=0.1)
    # height = sqrt(rays_per_frame / aspect), up to the rounding to multiples of 8
    assert h == pytest.approx(math.sqrt(rate / fps / aspect), abs=4.01)
    assert w * h <= 1.1 * rate / fps + 8 * (w + h)  # about the budget, never far above it


def test_moving_resolution_examples():
    assert moving_resolution(655_360, 10, 1.0, 512) == (256, 256)  # 65,536 rays a frame
    assert moving_resolution(4 * 655_360, 10, 1.0, 512) == (512, 512)


def test_moving_resolution_grows_with_throughput_and_is_clamped():
    sizes = [moving_resolution(r, 10, 1.5, 512) for r in (1e3, 1e4, 1e5, 1e6, 1e7, 1e9)]
    heights = [h for _, h in sizes]
    assert heights == sorted(heights)
    assert min(sizes[0]) == 32  # clamped at the minimum
    assert max(sizes[-1]) == 512  # the longer side never exceeds max_res
    for w, h in sizes:
        assert 32 <= min(w, h) and max(w, h) <= 512


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), None, "fast"])
def test_moving_resolution_unknown_rate_gives_smallest(bad):
    w, h = moving_resolution(bad, 10, 1.0, 512)
    assert (w, h) == (32, 32)


def test_static_resolution_uses_max_res_but_not_more_than_the_canvas():
    assert static_resolution(16 / 9, 512) == (512, 288)
    assert static_resolution(0.5, 512) == (256, 512)
    assert static_resolution(1.0, 1024, canvas_height=600) == (600, 600)
    assert static_resolution(1.0, 512, canvas_height=10_000) == (512, 512)


def test_fit_size_bounds_win():
    for h, a in [(5, 1), (10_000, 1), (100, 50), (100, 0.02), (float("nan"), 1)]:
        w2, h2 = fit_size(h, a, 512)
        assert 32 <= w2 <= 512 and 32 <= h2 <= 512


def test_update_rate_is_an_ema_and_ignores_bad_samples():
    r = update_rate(0.0, 1000, 0.01)
    assert r == pytest.approx(1e5)
    assert update_rate(r, 1000, 0.02, smoothing=0.5) == pytest.approx(0.5 * 1e5 + 0.5 * 5e4)
    assert update_rate(r, 1000, 0.0) == r
    assert update_rate(r, 0, 1.0) == r


def test_state_machine_low_while_moving_then_high_then_wait():
    # camera moved at t=1.0, nothing rendered yet: low-res frame at once
    assert next_action(1.0, last_move=1.0, rendered_move=-1, refined=False) == "low"
    # the low frame showed that move; still moving recently -> nothing new to draw yet
    assert next_action(1.1, last_move=1.0, rendered_move=1.0, refined=False) == "wait"
    # 0.2 s without a camera message: refine to full resolution
    assert next_action(1.21, last_move=1.0, rendered_move=1.0, refined=False) == "high"
    # refined: idle
    assert next_action(5.0, last_move=1.0, rendered_move=1.0, refined=True) == "wait"
    # a new move after the refinement: low again
    assert next_action(5.0, last_move=4.95, rendered_move=1.0, refined=True) == "low"
    # a move that happened long ago but was never drawn (e.g. interrupted refinement): straight to high
    assert next_action(5.0, last_move=4.0, rendered_move=1.0, refined=True) == "high"


def test_train_steps_per_render():
    # renders cost 0.3 s, steps 0.1 s, training keeps 85 %: 0.3*0.85/(0.1*0.15) = 17 steps
    assert train_steps_per_render(0.1, 0.3, 0.85) == 17
    n = train_steps_per_render(0.05, 0.2, 0.5)
    assert n * 0.05 / (n * 0.05 + 0.2) >= 0.5
    assert train_steps_per_render(0.1, 0.0) == 1
    assert train_steps_per_render(0.0, 0.3) == 1000
    assert train_steps_per_render(1e-9, 10.0, max_steps=50) == 50
    assert train_steps_per_render(float("nan"), 0.3) == 1000


def test_static_resolution_respects_a_time_budget():
    assert static_resolution(1.0, 512, None, rays_per_second=1e6, budget_s=1.0) == (512, 512)
    w, h = static_resolution(1.0, 512, None, rays_per_second=20_000, budget_s=0.5)  # 10k rays
    assert (w, h) == (96, 96) or (w, h) == (104, 104)
    assert static_resolution(1.0, 512, None, rays_per_second=10, budget_s=0.5) == (32, 32)
    assert static_resolution(1.0, 512, None, rays_per_second=0, budget_s=0.5) == (512, 512)  # no estimate yet
