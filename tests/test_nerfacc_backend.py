"""The CUDA fast paths the user named (nerfacc's estimator, traversal and compositing; tinycudann's hash encoding)
against nfkit's own torch paths.

nerfacc's occupancy update is plain torch, so its equality with nfkit's update runs on the CPU here; marching and
the packed scans exist only as CUDA code, so those comparisons skip without a CUDA GPU (and without nerfacc's
CUDA extension), as does the tinycudann one without tinycudann.
"""
from __future__ import annotations

import pytest
import torch

from nfkit.errors import NfkitError
from nfkit.renderers import OccupancyGrid
from nfkit.renderers.cameras import ray_aabb
from nfkit.renderers.compositing import weights_from_alpha, weights_from_density
from nfkit.renderers.sampling import march_reference, march_segment

nerfacc = pytest.importorskip("nerfacc")


def _cuda_nerfacc() -> bool:
    from nfkit.renderers import nerfacc_backend

    return torch.cuda.is_available() and nerfacc_backend.usable("cuda")


needs_cuda_nerfacc = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for nerfacc's "
                                        "CUDA extension (torch.cuda.is_available() is False)")


def _blob_density(centre, radius):
    def density(x):
        return 50.0 * torch.exp(-((x - centre).norm(dim=-1) / radius) ** 2)
    return density


@pytest.mark.parametrize("res", [8, 16])
def test_nerfacc_estimator_update_equals_torch_update(res):
    """Same seed, same field: nerfacc's OccGridEstimator (on the grid's own tensors) and nfkit's torch update give
    identical EMA values and masks, through warm-up (every cell) and after it (a random quarter + occupied)."""
    aabb = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]])
    density = _blob_density(torch.tensor([0.3, -0.8, 0.6]), 0.5)
    grids = {b: OccupancyGrid(aabb, res) for b in ("torch", "nerfacc")}
    for step in (0, 16, 32, 256, 272, 288, 304):
        for backend, grid in grids.items():
            torch.manual_seed(1000 + step)
            assert grid.update(step, density, step_size=0.02, warmup_steps=256, backend=backend)
        a, b = grids["torch"], grids["nerfacc"]
        torch.testing.assert_close(b.density, a.density, rtol=0, atol=0)
        assert torch.equal(b.binary, a.binary), step
        assert b.last_update_step == a.last_update_step == step
    frac = grids["torch"].occupancy_fraction()
    assert 0.01 < frac < 0.5, frac  # a non-trivial mask: the comparison means something


def test_nerfacc_backend_refused_in_one_line_without_cuda():
    """An explicit backend="nerfacc" for the CUDA-only parts on CPU tensors is a one-line error naming it."""
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 8)
    o, d = torch.zeros(4, 3) - 2, torch.nn.functional.normalize(torch.ones(4, 3), dim=-1)
    tn, tf = ray_aabb(o, d, grid.aabb)
    with pytest.raises(NfkitError, match="backend 'nerfacc' needs CUDA"):
        march_segment(o, d, tn, tf, torch.full_like(tn, 0.5), 0.05, grid, 0, "nerfacc")
    s = torch.rand(5)
    with pytest.raises(NfkitError, match="backend 'nerfacc'"):
        weights_from_density(s, s, s + 0.1, torch.zeros(5, dtype=torch.long), 1, backend="nerfacc")


def _rays(device, n=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = 3.0 * o / o.norm(dim=-1, keepdim=True)
    d = torch.nn.functional.normalize(-o + 0.4 * torch.randn(n, 3, generator=g), dim=-1)
    return o.to(device), d.to(device)


@needs_cuda_nerfacc
@pytest.mark.parametrize("stratified", [False, True])
def test_nerfacc_march_equals_reference_on_cuda(stratified):
    """nerfacc's traverse_grids through march_segment keeps the reference's samples: the same (ray, t) pairs up
    to float rounding on cell faces (>= 99.9 % shared, t within 1e-4)."""
    if not _cuda_nerfacc():
        pytest.skip("nerfacc's CUDA extension did not load")
    torch.manual_seed(0)
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.2, -0.8], [1.1, 1.0, 1.3]]), 32).cuda()
    grid.binary.copy_(torch.rand(32**3, device="cuda") < 0.3)
    o, d = _rays("cuda")
    tn, tf = ray_aabb(o, d, grid.aabb)
    jit = torch.rand_like(tn) if stratified else torch.full_like(tn, 0.5)
    step = 0.011
    ri_ref, t_ref, _ = march_reference(o, d, tn, tf, jit, step, grid.binary, grid.aabb, grid.resolution)
    ri, t, t_next = march_segment(o, d, tn, tf, jit, step, grid, 0, "nerfacc")
    assert ri_ref.numel() > 10000 and torch.equal(t_next, tf)
    assert bool((ri[1:] >= ri[:-1]).all())
    key = lambda r, tt: set(zip(r.tolist(), (tt / 1e-4).round().long().tolist()))  # noqa: E731
    a, b = key(ri_ref.cpu(), t_ref.cpu()), key(ri.cpu(), t.cpu())
    assert len(a & b) >= 0.999 * max(len(a), len(b)), (len(a), len(b), len(a & b))


@needs_cuda_nerfacc
def test_nerfacc_weights_and_gradients_equal_torch_on_cuda():
    """Packed weights from density and from alpha, and their gradients, equal nfkit's torch compositor."""
    if not _cuda_nerfacc():
        pytest.skip("nerfacc's CUDA extension did not load")
    torch.manual_seed(0)
    counts = torch.randint(0, 40, (300,))
    ri = torch.repeat_interleave(torch.arange(300), counts).cuda()
    n = ri.numel()
    t0 = torch.rand(n, device="cuda") * 3
    t1 = t0 + 0.02
    for fn, base in ((weights_from_density, torch.rand(n, device="cuda") * 20),
                     (weights_from_alpha, torch.rand(n, device="cuda") * 0.9)):
        outs, grads = [], []
        for backend in ("torch", "nerfacc"):
            x = base.clone().requires_grad_()
            args = (x, t0, t1, ri, 300) if fn is weights_from_density else (x, ri, 300)
            w = fn(*args, backend=backend)[0]
            (w * torch.linspace(0, 1, n, device="cuda")).sum().backward()
            outs.append(w.detach())
            grads.append(x.grad)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)


@needs_cuda_nerfacc
def test_nerfacc_grid_update_on_cuda_equals_torch():
    """On CUDA the grid update goes through nerfacc's estimator by default and equals the torch reference."""
    if not _cuda_nerfacc():
        pytest.skip("nerfacc's CUDA extension did not load")
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    density = _blob_density(torch.tensor([0.2, -0.1, 0.3], device="cuda"), 0.4)
    a, b = OccupancyGrid(aabb, 32).cuda(), OccupancyGrid(aabb, 32).cuda()
    for step in (0, 16, 256, 272):
        torch.manual_seed(step)
        a.update(step, density, 0.02, backend="torch")
        torch.manual_seed(step)
        b.update(step, density, 0.02)  # auto on CUDA: nerfacc
        assert torch.equal(a.binary, b.binary)
    assert getattr(b, "_nerfacc_estimator", None) is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_tinycudann_hash_encoding_equals_reference_on_cuda():
    """tinycudann's encoding on nfkit's parameter vector equals the pure-torch reference (forward and the
    parameter gradient), so one field file serves both backends."""
    pytest.importorskip("tinycudann", reason="tinycudann is not installed")
    from nfkit.fields.encodings import HashEncoding, HashGridConfig, hash_encode_reference

    torch.manual_seed(0)
    enc = HashEncoding(HashGridConfig(n_levels=8, log2_hashmap_size=14), backend="tcnn").cuda()
    with torch.no_grad():
        enc.params.normal_(0, 0.1)
    assert enc._tcnn is not None
    x = torch.rand(8192, 3, device="cuda")
    out = enc(x)
    ref_params = enc.params.detach().clone().requires_grad_()
    ref = hash_encode_reference(x, ref_params, enc.cfg)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(enc.params.grad, ref_params.grad, rtol=1e-3, atol=1e-4)
