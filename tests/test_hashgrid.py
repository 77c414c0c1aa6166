"""Hash-grid encoding: tiny-cuda-nn's level layout and indexing pinned by hand, and C++ kernel vs torch reference."""
import numpy as np
import pytest
import torch

from nfkit.fields.encodings import HashGridConfig, grid_index, hash_encode, hash_encode_reference, level_layout


def test_level_layout_matches_tcnn_formula_by_hand():
    # base 16, per-level scale 2, T = 2^12: scale_l = 16 * 2^l - 1 -> 15, 31, 63; resolution = ceil(scale) + 1
    scales, res, offsets = level_layout(HashGridConfig(3, 2, 12, 16, 2.0))
    assert scales.tolist() == [15.0, 31.0, 63.0]
    assert res.tolist() == [16, 32, 64]
    # entries: min(next multiple of 8 of res^3, 4096): 4096 (16^3 = 4096 fits exactly), 4096, 4096
    assert (offsets[1:] - offsets[:-1]).tolist() == [4096, 4096, 4096]
    scales, res, offsets = level_layout(HashGridConfig(2, 2, 19, 3, 2.0))
    # scale 2, 5 -> resolution 3, 6 -> 27 -> 32 entries (next multiple of 8), 216 entries
    assert res.tolist() == [3, 6] and (offsets[1:] - offsets[:-1]).tolist() == [32, 216]


def test_dense_and_hashed_indices_by_hand():
    p = torch.tensor([[1, 2, 3], [5, 0, 7]])
    # dense level: resolution 16, 4096 entries -> x + 16 y + 256 z
    assert grid_index(p, 16, 4096).tolist() == [1 + 32 + 768, 5 + 0 + 1792]
    # hashed level: resolution 64 (64^3 > 4096): (x * 1) ^ (y * 2654435761) ^ (z * 805459861) mod 2^32 mod 4096
    h0 = (1 ^ ((2 * 2654435761) & 0xFFFFFFFF) ^ ((3 * 805459861) & 0xFFFFFFFF)) % 4096
    h1 = (5 ^ 0 ^ ((7 * 805459861) & 0xFFFFFFFF)) % 4096
    assert grid_index(p, 64, 4096).tolist() == [h0, h1]
    assert (1 ^ 5308871522 % 2**32 ^ 2416379583) % 4096 == h0  # the same numbers written out


def test_half_offset_puts_vertices_at_half_integer_positions():
    """x = (k - 0.5) / scale lands exactly on vertex k: the encoding equals that single table entry."""
    cfg = HashGridConfig(1, 1, 12, 16, 2.0)  # one dense level: scale 15, resolution 16
    params = torch.arange(4096, dtype=torch.float32)  # entry i holds the value i
    k = torch.tensor([[3, 4, 5]])
    x = (k.float() - 0.5) / 15.0
    out = hash_encode_reference(x, params, cfg)
    assert out.item() == pytest.approx(3 + 16 * 4 + 256 * 5, abs=1e-3)
    # halfway between vertices along x: the mean of the two entries
    x2 = torch.tensor([[3.0, 3.5, 4.5]]) / 15.0  # pos = (3.5, 4, 5)
    assert hash_encode_reference(x2, params, cfg).item() == pytest.approx(3.5 + 16 * 4 + 256 * 5, abs=1e-3)


def test_reference_gradcheck_double():
    cfg = HashGridConfig(2, 2, 6, 2, 2.0)
    n = int(level_layout(cfg)[2][-1]) * 2
    params = torch.randn(n, dtype=torch.float64, requires_grad=True)
    x = torch.rand(5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: hash_encode_reference(x, p, cfg).double(), (params,), eps=1e-6,
                                    atol=1e-5)


def _kernels_or_skip():
    from nfkit import kernels

    if kernels.load() is None:
        pytest.skip("C++ kernels not available (no compiler): only the reference is tested")


@pytest.mark.parametrize("log2_t,nf", [(10, 2), (14, 2), (12, 4), (12, 1)])
def test_cpp_kernel_matches_reference(log2_t, nf):
    _kernels_or_skip()
    cfg = HashGridConfig(6, nf, log2_t, 4, 1.7)
    scales, res, offsets = level_layout(cfg)
    layout = (torch.from_numpy(offsets), torch.from_numpy(scales), torch.from_numpy(res))
    g = torch.Generator().manual_seed(0)
    params = torch.rand(int(offsets[-1]) * nf, generator=g) * 2 - 1
    x = torch.cat([torch.rand(500, 3, generator=g), torch.tensor([[0.0, 0, 0], [1, 1, 1], [0, 1, 0.5]])])
    ref = hash_encode_reference(x, params, cfg)
    out = hash_encode(x, params, cfg, layout, backend="cpp")
    assert torch.allclose(out, ref, atol=1e-6)
    gout = torch.randn_like(ref)
    p1 = params.clone().requires_grad_(True)
    hash_encode_reference(x, p1, cfg).backward(gout)
    p2 = params.clone().requires_grad_(True)
    hash_encode(x, p2, cfg, layout, backend="cpp").backward(gout)
    assert torch.allclose(p1.grad, p2.grad, atol=1e-5)
