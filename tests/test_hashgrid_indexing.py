"""Hash-grid encoding (fields/encodings.py) pinned against hand-computed cases, and the C++ kernel vs the reference.

tiny-cuda-nn's GridEncoding (``encodings/grid.h``, ``common_device.h``), the behaviour this module promises:

* scale ``s_l = exp2(l * log2(per_level_scale)) * base_resolution - 1``; resolution ``r_l = ceil(s_l) + 1``;
* entries per level ``min(next_multiple_of_8(r_l^3), 2^log2_hashmap_size)``;
* a level is dense (``x + y*r + z*r^2``) while ``r_l^3`` fits in the level, else hashed with
  ``x*1 ^ y*2654435761 ^ z*805459861`` (uint32); both ``% entries``;
* position ``p = s_l * x + 0.5``, D-linear weights from ``p - floor(p)``.

Every expected number below is written out by hand (or from those formulas in plain Python integers), never
obtained from the code under test.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from nfkit.fields.encodings import HashGridConfig, grid_index, hash_encode, hash_encode_reference, level_layout

MASK32 = 0xFFFFFFFF


def cfg_of(n_levels, n_features, log2_t, base, pls) -> HashGridConfig:
    return HashGridConfig(n_levels=n_levels, n_features_per_level=n_features, log2_hashmap_size=log2_t,
                          base_resolution=base, per_level_scale=pls)


def hash_by_hand(x: int, y: int, z: int) -> int:
    """The CoherentPrime hash in Python integers (before ``% entries``)."""
    return (x * 1) ^ ((y * 2654435761) & MASK32) ^ ((z * 805459861) & MASK32)


def identity_table(cfg: HashGridConfig) -> torch.Tensor:
    """Flat params where entry ``i``, feature ``f`` holds ``i * F + f`` (its own flat index)."""
    n = int(level_layout(cfg)[2][-1]) * cfg.n_features_per_level
    return torch.arange(n, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ layout


def test_level_layout_base16_scale2_t4096():
    """base 16, per_level_scale 2, log2 T 12, 3 levels: scales 16*2^l - 1 = 15, 31, 63; resolutions
    ceil(s) + 1 = 16, 32, 64; entries min(next_mult8(r^3), 4096) = min(4096, 4096), min(32768, 4096),
    min(262144, 4096) = 4096 each; offsets are their running sum."""
    scales, res, offsets = level_layout(cfg_of(3, 2, 12, 16, 2.0))
    assert scales.dtype == np.float32
    assert scales.tolist() == [15.0, 31.0, 63.0]
    assert res.tolist() == [16, 32, 64]
    assert offsets.tolist() == [0, 4096, 8192, 12288]


def test_level_layout_rounds_to_multiple_of_8_and_caps():
    """base 3, per_level_scale 2, log2 T 10: scales 2, 5, 11 -> resolutions 3, 6, 12 -> r^3 = 27, 216, 1728 ->
    entries 32 (27 rounded up to a multiple of 8), 216 (already one), 1024 (capped at T)."""
    scales, res, offsets = level_layout(cfg_of(3, 1, 10, 3, 2.0))
    assert scales.tolist() == [2.0, 5.0, 11.0]
    assert res.tolist() == [3, 6, 12]
    assert offsets.tolist() == [0, 32, 32 + 216, 32 + 216 + 1024]


def test_hash_encoding_module_parameter_count():
    """HashEncoding allocates sum(entries) * F parameters: (32 + 216 + 1024) * 2 for the config above."""
    from nfkit.fields.encodings import HashEncoding

    enc = HashEncoding(cfg_of(3, 2, 10, 3, 2.0), backend="torch")
    assert enc.params.numel() == (32 + 216 + 1024) * 2
    assert enc.out_dim == 6


# ------------------------------------------------------------------------------------------------ indices


def test_dense_index_by_hand():
    """Dense level (r = 16, 4096 entries, 16^3 fits): index x + 16 y + 256 z."""
    p = torch.tensor([[0, 0, 0], [1, 2, 3], [5, 0, 7], [15, 15, 15], [16, 0, 0]])
    assert grid_index(p, 16, 4096).tolist() == [0, 1 + 32 + 768, 5 + 1792, 15 + 240 + 3840, 16]
    # r = 3 with 32 entries (27 rounded up): still dense, x + 3 y + 9 z
    p3 = torch.tensor([[2, 2, 2], [1, 0, 2], [3, 0, 0]])
    assert grid_index(p3, 3, 32).tolist() == [26, 19, 3]


def test_hashed_index_by_hand():
    """Hashed level (r = 64, 64^3 > 4096): (x*1 ^ y*2654435761 ^ z*805459861) mod 2^32 mod 4096.

    By hand: 2*2654435761 = 5308871522 = 1013904226 (mod 2^32); 3*805459861 = 2416379583;
    1 ^ 1013904226 ^ 2416379583 = 2892625372 = 1500 (mod 4096)."""
    points = [(0, 0, 0), (1, 2, 3), (5, 0, 7), (63, 63, 63), (17, 40, 2), (64, 1, 0)]
    expected_hash = [0, 2892625372, 1343251734, 1060470555, 3635391635, 2654435825]
    assert [hash_by_hand(*p) for p in points] == expected_hash  # the hand formula itself
    expected = [0, 1500, 1302, 3867, 3219, 2545]
    assert [h % 4096 for h in expected_hash] == expected
    got = grid_index(torch.tensor(points), 64, 4096).tolist()
    assert got == expected
    # level with 512 entries (r = 9: 9^3 = 729 -> 736 > 512): the same hash, % 512
    assert grid_index(torch.tensor([[3, 5, 2], [4, 5, 2], [1, 2, 3]]), 9, 512).tolist() == [348, 347, 476]


# ------------------------------------------------------------------------------------------ reference forward


def test_vertex_gets_weight_one_dense_level():
    """One dense level (base 5: s = 4, r = 5, 125 -> 128 entries). x = (k - 0.5)/4 puts p = s x + 0.5 exactly on
    vertex k = (2, 1, 3): the identity table gives its index 2 + 5*1 + 25*3 = 82, and d(out)/d(params) is 1 at
    entry 82 and 0 elsewhere (weight 1 on one corner)."""
    cfg = cfg_of(1, 1, 12, 5, 2.0)
    assert level_layout(cfg)[1].tolist() == [5] and level_layout(cfg)[2].tolist() == [0, 128]
    params = identity_table(cfg).requires_grad_(True)
    x = torch.tensor([[0.375, 0.125, 0.625]])
    out = hash_encode_reference(x, params, cfg)
    assert out.item() == 82.0
    out.sum().backward()
    expected = torch.zeros(128)
    expected[82] = 1.0
    assert torch.equal(params.grad, expected)


def test_vertex_gets_weight_one_hashed_level():
    """One hashed level (base 9: s = 8, r = 9, 729 > 512 = T). x = ((3, 5, 2) - 0.5) / 8 is vertex (3, 5, 2):
    out = hash(3, 5, 2) % 512 = 1997655900 % 512 = 348; halfway to (4, 5, 2) (hash % 512 = 347) gives 347.5."""
    cfg = cfg_of(1, 1, 9, 9, 2.0)
    assert level_layout(cfg)[1].tolist() == [9] and level_layout(cfg)[2].tolist() == [0, 512]
    assert hash_by_hand(3, 5, 2) == 1997655900 and hash_by_hand(4, 5, 2) % 512 == 347
    params = identity_table(cfg).requires_grad_(True)
    out = hash_encode_reference(torch.tensor([[0.3125, 0.5625, 0.1875]]), params, cfg)
    assert out.item() == 348.0
    out.sum().backward()
    assert params.grad[348] == 1.0 and params.grad.sum() == 1.0
    mid = hash_encode_reference(torch.tensor([[0.375, 0.5625, 0.1875]]), params.detach(), cfg)  # p = (3.5, 5, 2)
    assert mid.item() == 347.5


def test_identity_table_interior_point_is_linear_in_position():
    """Dense level r = 5, identity table: trilinear interpolation of the linear index x + 5y + 25z is exact, so
    x = (0.3, 0.55, 0.1) -> p = 4x + 0.5 = (1.7, 2.7, 0.9) -> 1.7 + 13.5 + 22.5 = 37.7."""
    cfg = cfg_of(1, 1, 12, 5, 2.0)
    out = hash_encode_reference(torch.tensor([[0.3, 0.55, 0.1]]), identity_table(cfg), cfg)
    assert out.item() == pytest.approx(37.7, abs=1e-4)


def test_two_levels_two_features_output_layout():
    """Levels base 5, scale 2: s = 4, 9; r = 5, 10; entries 128, 1000 (both dense, T = 4096). Identity table:
    entry i feature f holds 2i + f. x = (0.375, 0.125, 0.625):
    level 0: p = (2, 1, 3) -> entry 82 -> (164, 165);
    level 1: p = 9x + 0.5 = (3.875, 1.625, 6.125) -> 3.875 + 10*1.625 + 100*6.125 = 632.625, offset 128 ->
    entry 760.625 -> (1521.25, 1522.25). Output columns are level-major: l * F + f."""
    cfg = cfg_of(2, 2, 12, 5, 2.0)
    scales, res, offsets = level_layout(cfg)
    assert scales.tolist() == [4.0, 9.0] and res.tolist() == [5, 10] and offsets.tolist() == [0, 128, 1128]
    out = hash_encode_reference(torch.tensor([[0.375, 0.125, 0.625]]), identity_table(cfg), cfg)
    assert out.shape == (1, 4)
    assert torch.allclose(out[0], torch.tensor([164.0, 165.0, 1521.25, 1522.25]), atol=1e-3)


def test_reference_gradcheck_double():
    """torch.autograd.gradcheck of the reference encoding w.r.t. the params (float64) on a tiny config with one
    dense and one hashed level."""
    cfg = cfg_of(2, 2, 6, 3, 2.0)  # r = 3 (27 -> 32 entries, dense), r = 6 (216 > 64: hashed)
    n = int(level_layout(cfg)[2][-1]) * 2
    g = torch.Generator().manual_seed(0)
    params = torch.randn(n, dtype=torch.float64, generator=g).requires_grad_(True)
    x = torch.rand(6, 3, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda p: hash_encode_reference(x, p, cfg), (params,), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------- C++ kernel vs reference


@pytest.fixture(scope="module")
def kernels():
    from nfkit import kernels as k

    if k.load() is None:
        pytest.skip("C++ CPU kernels unavailable (no compiler): only the reference is tested")
    return k.load()


def _layout(cfg):
    scales, res, offsets = level_layout(cfg)
    return (torch.from_numpy(offsets.astype(np.int64)), torch.from_numpy(scales),
            torch.from_numpy(res.astype(np.int64)))


def _points(seed: int, n: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    edges = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5],
                          [0.375, 0.125, 0.625]])
    return torch.cat([torch.rand(n, 3, generator=g), edges])


@pytest.mark.parametrize("n_levels,n_features,log2_t,base,pls", [
    (3, 2, 12, 16, 2.0),   # dense then hashed
    (8, 2, 12, 16, 2.0),   # up to r = 2048: large coordinates, uint32 wrap-around in the hash
    (6, 1, 10, 4, 1.7),
    (5, 4, 14, 3, 1.9),
    (4, 8, 9, 5, 1.5),
])
def test_cpp_kernel_matches_reference(kernels, n_levels, n_features, log2_t, base, pls):
    """hash_encode(backend="cpp") equals the reference forward (to 1e-6; the arithmetic is the same) and its
    parameter gradient equals the reference's to 1e-5, on random points plus points exactly at 0 and 1; some
    rows of the incoming gradient are zero (the kernel skips those)."""
    cfg = cfg_of(n_levels, n_features, log2_t, base, pls)
    layout = _layout(cfg)
    g = torch.Generator().manual_seed(n_levels * 10 + n_features)
    params = torch.rand(int(layout[0][-1]) * n_features, generator=g) * 2 - 1
    x = _points(n_levels)
    ref = hash_encode_reference(x, params, cfg)
    out = hash_encode(x, params, cfg, layout, backend="cpp")
    assert out.shape == ref.shape == (x.shape[0], n_levels * n_features)
    assert torch.allclose(out, ref, rtol=0, atol=1e-6), float((out - ref).abs().max())

    gout = torch.randn(ref.shape, generator=g)
    gout[::7] = 0.0
    p_ref = params.clone().requires_grad_(True)
    hash_encode_reference(x, p_ref, cfg).backward(gout)
    p_cpp = params.clone().requires_grad_(True)
    hash_encode(x, p_cpp, cfg, layout, backend="cpp").backward(gout)
    assert torch.allclose(p_cpp.grad, p_ref.grad, rtol=0, atol=1e-5), float((p_cpp.grad - p_ref.grad).abs().max())


def test_cpp_kernel_on_identity_table_hand_values(kernels):
    """The kernel reproduces the hand-derived values of the identity-table cases above."""
    cfg = cfg_of(2, 2, 12, 5, 2.0)
    out = hash_encode(torch.tensor([[0.375, 0.125, 0.625]]), identity_table(cfg), cfg, _layout(cfg), backend="cpp")
    assert torch.allclose(out[0], torch.tensor([164.0, 165.0, 1521.25, 1522.25]), atol=1e-3)
    cfg = cfg_of(1, 1, 9, 9, 2.0)
    out = hash_encode(torch.tensor([[0.3125, 0.5625, 0.1875]]), identity_table(cfg), cfg, _layout(cfg), backend="cpp")
    assert out.item() == 348.0


def test_cpp_backend_with_input_grad_falls_back_to_reference(kernels):
    """With x requiring grad the "cpp" backend uses the reference (x gets a gradient) and gives the same values."""
    cfg = cfg_of(3, 2, 10, 4, 1.7)
    layout = _layout(cfg)
    params = torch.rand(int(layout[0][-1]) * 2, generator=torch.Generator().manual_seed(1))
    x = _points(1, 50).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input gradients need the torch reference path", once
        out = hash_encode(x, params, cfg, layout, backend="cpp")
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.allclose(out.detach(), hash_encode_reference(x.detach(), params, cfg), atol=1e-6)

