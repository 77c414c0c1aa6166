"""Compositing (nfkit.renderers.compositing) against nerfacc 0.5.3's batched volume-rendering math on the CPU.

nerfacc's ``rendering`` returns depth normalised by opacity; ours is the un-normalised expected depth
``sum w_i t_i``, so it is compared with ``nerfacc_depth * nerfacc_opacity``.
"""
from __future__ import annotations

import pytest
import torch

from nfkit.renderers.compositing import (composite_batched, composite_packed, weights_from_alpha,
                                         weights_from_density)

nerfacc = pytest.importorskip("nerfacc")
from nerfacc import volrend  # noqa: E402

ATOL = 1e-5


def batched_example(seed: int, n_rays: int = 7, n_samples: int = 12):
    """Sorted intervals [R, S] with gaps, densities in [0, 8), colours in [0, 1), a background colour."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.rand(n_rays, n_samples, generator=g) * 0.2 + 0.01
    gap = torch.rand(n_rays, n_samples, generator=g) * 0.05
    t_ends = torch.cumsum(dt + gap, -1) + 0.5
    t_starts = t_ends - dt
    sigmas = torch.rand(n_rays, n_samples, generator=g) * 8.0
    rgbs = torch.rand(n_rays, n_samples, 3, generator=g)
    bg = torch.rand(3, generator=g)
    return t_starts, t_ends, sigmas, rgbs, bg


def nerfacc_batched(t_starts, t_ends, sigmas, rgbs, bg):
    """nerfacc 0.5.3 batched rendering -> (rgb [R,3], opacity [R], unnormalised depth [R], weights [R,S])."""
    rgb, opacity, depth, extras = volrend.rendering(
        t_starts, t_ends, rgb_sigma_fn=lambda ts, te, ri: (rgbs, sigmas), render_bkgd=bg)
    return rgb, opacity[:, 0], (depth * opacity)[:, 0], extras["weights"]


def pack(valid: torch.Tensor, *tensors):
    """Packs [R, S(, C)] tensors to [N(, C)] keeping the samples where ``valid`` [R, S]; returns (ray_indices, ...)."""
    ray_indices = torch.nonzero(valid, as_tuple=True)[0]
    return (ray_indices, *[t[valid] for t in tensors])


def prefix_mask(seed: int, n_rays: int, n_samples: int) -> torch.Tensor:
    """[R, S] bool: the first n_r samples of each ray valid, n_r random in [0, S] (a 0 and an S forced in)."""
    g = torch.Generator().manual_seed(seed + 1000)
    n_valid = torch.randint(0, n_samples + 1, (n_rays,), generator=g)
    n_valid[0], n_valid[-1] = 0, n_samples
    return torch.arange(n_samples)[None] < n_valid[:, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_match_nerfacc_batched(seed):
    """weights_from_density (packed, all samples valid) and composite_batched's weights equal nerfacc's batched
    render_weight_from_density, including transmittance and alpha."""
    t_starts, t_ends, sigmas, rgbs, bg = batched_example(seed)
    w_ref, trans_ref, alpha_ref = volrend.render_weight_from_density(t_starts, t_ends, sigmas)
    R, S = sigmas.shape
    ri = torch.arange(R).repeat_interleave(S)
    w, trans, alphas = weights_from_density(sigmas.reshape(-1), t_starts.reshape(-1), t_ends.reshape(-1), ri, R)
    assert torch.allclose(w.view(R, S), w_ref, atol=ATOL)
    assert torch.allclose(trans.view(R, S), trans_ref, atol=ATOL)
    assert torch.allclose(alphas.view(R, S), alpha_ref, atol=ATOL)
    _, _, _, wb = composite_batched(sigmas, rgbs, t_starts, t_ends, bg)
    assert torch.allclose(wb, w_ref, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_bg", [True, False])
def test_batched_matches_nerfacc_rendering(seed, with_bg):
    """composite_batched: colour (with and without a background), opacity and depth equal nerfacc.rendering."""
    t_starts, t_ends, sigmas, rgbs, bg = batched_example(seed)
    bg = bg if with_bg else None
    rgb_ref, op_ref, depth_ref, w_ref = nerfacc_batched(t_starts, t_ends, sigmas, rgbs, bg)
    rgb, op, depth, w = composite_batched(sigmas, rgbs, t_starts, t_ends, bg)
    assert torch.allclose(rgb, rgb_ref, atol=ATOL)
    assert torch.allclose(op, op_ref, atol=ATOL)
    assert torch.allclose(depth, depth_ref, atol=ATOL)
    assert torch.allclose(w, w_ref, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_packed_matches_nerfacc_with_invalid_samples_zeroed(seed):
    """composite_packed on a packed layout (random number of valid samples per ray, incl. 0 and all) equals nerfacc
    batched rendering where the invalid samples get sigma 0; an empty ray shows the background."""
    t_starts, t_ends, sigmas, rgbs, bg = batched_example(seed)
    R, S = sigmas.shape
    valid = prefix_mask(seed, R, S)
    rgb_ref, op_ref, depth_ref, w_ref = nerfacc_batched(t_starts, t_ends, sigmas * valid, rgbs, bg)
    ri, s_p, c_p, t0_p, t1_p = pack(valid, sigmas, rgbs, t_starts, t_ends)
    assert bool((ri[1:] >= ri[:-1]).all())
    rgb, op, depth, w = composite_packed(s_p, c_p, t0_p, t1_p, ri, R, bg)
    assert rgb.shape == (R, 3) and op.shape == (R,) and depth.shape == (R,) and w.shape == s_p.shape
    assert torch.allclose(w, w_ref[valid], atol=ATOL)
    assert torch.allclose(w_ref[~valid], torch.zeros(()), atol=ATOL)
    assert torch.allclose(rgb, rgb_ref, atol=ATOL)
    assert torch.allclose(op, op_ref, atol=ATOL)
    assert torch.allclose(depth, depth_ref, atol=ATOL)
    assert torch.allclose(rgb[0], bg) and op[0] == 0 and depth[0] == 0  # ray 0 has no samples


def test_packed_per_ray_background_and_no_background():
    """A [n_rays, 3] background is applied per ray; no background means black (same as nerfacc without one)."""
    t_starts, t_ends, sigmas, rgbs, _ = batched_example(5)
    R, S = sigmas.shape
    valid = prefix_mask(5, R, S)
    ri, s_p, c_p, t0_p, t1_p = pack(valid, sigmas, rgbs, t_starts, t_ends)
    bgs = torch.rand(R, 3, generator=torch.Generator().manual_seed(9))
    rgb_none, op, _, _ = composite_packed(s_p, c_p, t0_p, t1_p, ri, R, None)
    rgb_ref, _, _, _ = nerfacc_batched(t_starts, t_ends, sigmas * valid, rgbs, None)
    assert torch.allclose(rgb_none, rgb_ref, atol=ATOL)
    rgb_bg, _, _, _ = composite_packed(s_p, c_p, t0_p, t1_p, ri, R, bgs)
    assert torch.allclose(rgb_bg, rgb_none + (1 - op)[:, None] * bgs, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_gradients_match_batched(seed):
    """d(loss)/d(sigmas, rgbs) through composite_packed equals the same gradient through composite_batched (with
    invalid samples at sigma 0) and through nerfacc's batched rendering, at the valid samples."""
    t_starts, t_ends, sigmas, rgbs, bg = batched_example(seed)
    R, S = sigmas.shape
    valid = prefix_mask(seed, R, S)
    g = torch.Generator().manual_seed(seed + 77)
    c_rgb, c_op, c_d = torch.randn(R, 3, generator=g), torch.randn(R, generator=g), torch.randn(R, generator=g)

    def loss(rgb, op, depth):
        return (rgb * c_rgb).sum() + (op * c_op).sum() + (depth * c_d).sum()

    grads = {}
    for name in ("packed", "batched", "nerfacc"):
        s = (sigmas * valid).clone().requires_grad_(True)
        c = rgbs.clone().requires_grad_(True)
        if name == "packed":
            ri, s_p, c_p, t0_p, t1_p = pack(valid, s, c, t_starts, t_ends)
            out = composite_packed(s_p, c_p, t0_p, t1_p, ri, R, bg)[:3]
        elif name == "batched":
            out = composite_batched(s, c, t_starts, t_ends, bg)[:3]
        else:
            out = nerfacc_batched(t_starts, t_ends, s, c, bg)[:3]
        loss(*out).backward()
        grads[name] = (s.grad[valid], c.grad[valid])
        if name == "packed":  # samples that were not packed get no gradient at all
            assert bool((s.grad[~valid] == 0).all()) and bool((c.grad[~valid] == 0).all())
    for other in ("batched", "nerfacc"):
        assert torch.allclose(grads["packed"][0], grads[other][0], atol=ATOL), other
        assert torch.allclose(grads["packed"][1], grads[other][1], atol=ATOL), other


def test_weights_from_alpha_matches_nerfacc():
    """Packed weights_from_alpha equals nerfacc's batched render_weight_from_alpha (transmittance too)."""
    g = torch.Generator().manual_seed(3)
    alphas = torch.rand(6, 10, generator=g) * 0.6
    w_ref, trans_ref = volrend.render_weight_from_alpha(alphas)
    ri = torch.arange(6).repeat_interleave(10)
    w, trans = weights_from_alpha(alphas.reshape(-1), ri, 6)
    assert torch.allclose(w.view(6, 10), w_ref, atol=ATOL)
    assert torch.allclose(trans.view(6, 10), trans_ref, atol=ATOL)
