"""Occupancy-grid marching (renderers/sampling.py) and the grid update (renderers/occupancy.py).

Marching must keep exactly the candidate samples ``t_k = t_near + (k + jitter) * step`` (``t_k < t_far``) whose
cell is occupied: never drop one, never add one. The C++ kernel (``march_segment`` on CPU) is compared with the
pure-torch ``march_reference`` as exact sets, and both with a brute-force Python loop for a few rays.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfkit.renderers import OccupancyGrid
from nfkit.renderers.cameras import ray_aabb
from nfkit.renderers.sampling import march, march_reference, march_segment

AABBS = [
    torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
    torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]),  # the Blender / trainer default box
    torch.tensor([[-0.7, -1.3, -0.2], [0.9, 1.1, 1.3]]),  # non-cubic, off-centre
]


def kernels_or_none():
    from nfkit import kernels

    return kernels.load()


def random_setup(seed: int, aabb: torch.Tensor, res: int = 8, n_rays: int = 256, p_occ: float = 0.35):
    """A random binary grid and random rays: origins inside and outside the box, aimed roughly at it (some miss)."""
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(aabb, res)
    grid.binary.copy_(torch.rand(res**3, generator=g) < p_occ)
    centre, ext = aabb.mean(0), aabb[1] - aabb[0]
    o = centre + (torch.rand(n_rays, 3, generator=g) - 0.5) * ext * 3.0
    o[: n_rays // 4] = centre + (torch.rand(n_rays // 4, 3, generator=g) - 0.5) * ext * 0.9  # inside the box
    target = centre + (torch.rand(n_rays, 3, generator=g) - 0.5) * ext * 1.5
    d = torch.nn.functional.normalize(target - o + 1e-3, dim=-1)
    t_near, t_far = ray_aabb(o, d, grid.aabb)
    jitter = torch.rand(n_rays, generator=g)
    return grid, o, d, t_near, t_far, jitter


def as_set(ri: torch.Tensor, t: torch.Tensor) -> set:
    return set(zip(ri.tolist(), t.tolist()))


def brute_force(grid: OccupancyGrid, o, d, t_near, t_far, jitter, step: float, rays) -> list:
    """Independent Python loop, float32 arithmetic as documented: t = t_near + (k + u) * step, x = o + t d,
    cell = floor((x - lo) / (hi - lo) * res) if 0 <= (x - lo) / (hi - lo) < 1 on every axis."""
    f32 = np.float32
    lo, hi = grid.aabb[0].numpy(), grid.aabb[1].numpy()
    res = grid.resolution
    occ = grid.binary.numpy()
    out = []
    for r in rays:
        k = 0
        while True:
            t = f32(t_near[r].item()) + (f32(k) + f32(jitter[r].item())) * f32(step)
            if not t < f32(t_far[r].item()):
                break
            x = o[r].numpy() + t * d[r].numpy()
            u = (x - lo) / (hi - lo)
            assert x.dtype == np.float32 and u.dtype == np.float32
            if ((u >= 0) & (u < 1)).all():
                i, j, kk = (min(int(math.floor(float(c * f32(res)))), res - 1) for c in u)
                if occ[(i * res + j) * res + kk]:
                    out.append((r, float(t)))
            k += 1
    return out


@pytest.mark.parametrize("aabb_i", range(len(AABBS)))
@pytest.mark.parametrize("seed", [0, 1])
def test_cpp_march_equals_reference_exactly(aabb_i, seed):
    """C++ march_segment and march_reference return the same (ray, t) samples as exact sets, in the same packed
    order, with rays in increasing order and t increasing within each ray; t_next is t_far (no cap)."""
    if kernels_or_none() is None:
        pytest.skip("C++ CPU kernels unavailable")
    grid, o, d, tn, tf, jit = random_setup(seed, AABBS[aabb_i], res=8 + 8 * seed)
    step = 0.013 + 0.01 * seed
    ri_ref, t_ref, nx_ref = march_reference(o, d, tn, tf, jit, step, grid.binary, grid.aabb, grid.resolution)
    ri, t, nx = march_segment(o, d, tn, tf, jit, step, grid, 0, "auto")
    assert ri.dtype == torch.long and t.dtype == torch.float32
    assert ri_ref.numel() > 1000  # a meaningful number of samples
    assert as_set(ri, t) == as_set(ri_ref, t_ref)
    assert torch.equal(ri, ri_ref) and torch.equal(t, t_ref)
    assert torch.equal(nx, tf) and torch.equal(nx_ref, tf)
    for r_, t_ in ((ri, t), (ri_ref, t_ref)):
        assert bool((r_[1:] >= r_[:-1]).all())
        same = r_[1:] == r_[:-1]
        assert bool((t_[1:][same] > t_[:-1][same]).all())


@pytest.mark.parametrize("aabb_i", range(len(AABBS)))
def test_march_matches_brute_force_loop(aabb_i):
    """For a dozen rays, the reference (and the C++ kernel) keep exactly the candidates a plain Python loop
    finds in occupied cells: none dropped, none added; every kept t lies in [t_near, t_far)."""
    grid, o, d, tn, tf, jit = random_setup(7, AABBS[aabb_i], res=8, n_rays=64)
    step = 0.05
    rays = [r for r in range(64) if tf[r] > tn[r]][:12]
    assert len(rays) >= 8
    expected = brute_force(grid, o, d, tn, tf, jit, step, rays)
    assert len(expected) > 50
    ri, t, _ = march_reference(o, d, tn, tf, jit, step, grid.binary, grid.aabb, grid.resolution)
    keep = torch.isin(ri, torch.tensor(rays))
    got = list(zip(ri[keep].tolist(), t[keep].tolist()))
    assert sorted(got) == sorted(expected)
    assert bool((t >= tn[ri]).all()) and bool((t < tf[ri]).all())
    if kernels_or_none() is not None:
        ri_c, t_c, _ = march_segment(o, d, tn, tf, jit, step, grid, 0, "auto")
        keep = torch.isin(ri_c, torch.tensor(rays))
        assert sorted(zip(ri_c[keep].tolist(), t_c[keep].tolist())) == sorted(expected)


def test_march_all_occupied_keeps_every_candidate_and_empty_grid_none():
    """All cells occupied: each hitting ray gets every candidate t_k < t_far (count ceil((t_far - t_near)/step -
    jitter) up to float rounding); an empty grid gives no samples at all."""
    grid, o, d, tn, tf, jit = random_setup(3, AABBS[2], res=8)
    grid.binary.fill_(True)
    step = 0.04
    ri, t, _ = march_segment(o, d, tn, tf, jit, step, grid)
    counts = torch.bincount(ri, minlength=o.shape[0])
    expected = torch.clamp(torch.ceil((tf - tn) / step - jit), min=0).long()
    assert bool(((counts - expected).abs() <= 1).all())
    assert int(counts[tf <= tn].sum()) == 0
    grid.binary.fill_(False)
    for backend in ("auto", "torch"):
        ri, t, _ = march_segment(o, d, tn, tf, jit, step, grid, 0, backend)
        assert ri.numel() == 0 and t.numel() == 0


@pytest.mark.parametrize("cap", [1, 3])
def test_capped_march_cpp_equals_reference(cap):
    """With max_per_ray, the kernel and the reference keep the same first ``cap`` samples per ray and report the
    same continuation point t_next."""
    if kernels_or_none() is None:
        pytest.skip("C++ CPU kernels unavailable")
    grid, o, d, tn, tf, jit = random_setup(11, AABBS[0], res=8)
    step = 0.03
    a = march_reference(o, d, tn, tf, jit, step, grid.binary, grid.aabb, grid.resolution, cap)
    b = march_segment(o, d, tn, tf, jit, step, grid, cap, "auto")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.allclose(a[2], b[2], atol=1e-6)
    assert int(torch.bincount(b[0]).max()) <= cap


def test_public_march_intervals_and_backends():
    """march(): intervals are [t - step/2, t + step/2] around the kept midpoints; without stratification the
    jitter is 0.5; the torch and C++ backends agree exactly for the same random state (stratified)."""
    grid, o, d, tn, tf, _ = random_setup(5, AABBS[1], res=16)
    step = 0.02
    ri, t0, t1 = march(o, d, grid, step, stratified=False)
    assert torch.allclose(t1 - t0, torch.full_like(t0, step), atol=1e-6)
    ri_ref, t_ref, _ = march_reference(o, d, tn, tf, torch.full_like(tn, 0.5), step, grid.binary, grid.aabb, 16)
    assert torch.equal(ri, ri_ref) and torch.allclose((t0 + t1) / 2, t_ref, atol=1e-6)
    torch.manual_seed(0)
    a = march(o, d, grid, step, stratified=True, backend="torch")
    torch.manual_seed(0)
    b = march(o, d, grid, step, stratified=True, backend="auto")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert bool((a[0][1:] >= a[0][:-1]).all())


@pytest.mark.parametrize("res", [32, 36])  # 36: the last coarse block (of 2, and of 8) is partial
@pytest.mark.parametrize("aabb_i", range(len(AABBS)))
def test_cpp_march_skips_empty_space_exactly(res, aabb_i):
    """Sparse grids (a few occupied blobs, most coarse blocks and cells empty, so the kernel's empty-space skipping
    is exercised): the C++ kernel keeps exactly the reference's samples, capped or not; the coarse grid ORs blocks.
    Checked with the default levels (8 and 2), with one level of each, and with none."""
    if kernels_or_none() is None:
        pytest.skip("C++ CPU kernels unavailable")
    grid, o, d, tn, tf, jit = random_setup(21 + res, AABBS[aabb_i], res=res, n_rays=512, p_occ=0.0)
    g = torch.Generator().manual_seed(res)
    b = grid.binary.view(res, res, res)
    for _ in range(4):
        i, j, k = torch.randint(0, res - 3, (3,), generator=g).tolist()
        b[i:i + 3, j:j + 3, k:k + 3] = True
    assert grid.mips()[1] == [8, 2]
    coarse = grid.coarse(8).view(-1)
    c = -(-res // 8)
    assert coarse.numel() == c**3 and 0 < int(coarse.sum()) < c**3 // 2
    assert int(coarse.sum()) == len({(i // 8, j // 8, k // 8) for i, j, k in torch.nonzero(b).tolist()})
    step = 0.011
    for cap in (0, 2):
        ri_ref, t_ref, nx_ref = march_reference(o, d, tn, tf, jit, step, grid.binary, grid.aabb, res, cap)
        assert ri_ref.numel() > (100 if cap == 0 else 20)
        for factors in ([8, 2], [8], [2], []):
            ri, t, nx = kernels_or_none().march(o, d, tn, tf, jit, step, grid.binary, grid.aabb, res, cap,
                                                [grid.coarse(f) for f in factors], factors)
            assert torch.equal(ri, ri_ref) and torch.equal(t, t_ref)
            assert torch.allclose(nx, nx_ref, atol=1e-6)


def test_cpp_march_agrees_with_reference_on_cell_boundaries():
    """A sample sitting at x = 0.4687499 in the [-1.5, 1.5]^3 box at resolution 64 (a float just below a cell
    boundary): the reference puts it in cell i = 41 along x; with only that cell occupied both backends must keep it."""
    if kernels_or_none() is None:
        pytest.skip("C++ CPU kernels unavailable")
    grid = OccupancyGrid(torch.tensor([[-1.5] * 3, [1.5] * 3]), 64)
    o = torch.tensor([[0.4687499, 0.01, 0.01]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    idx, inside = grid.cell_index(o)
    grid.binary.zero_()
    grid.binary[idx] = True
    args = (o, d, torch.zeros(1), torch.full((1,), 1e-3), torch.zeros(1), 0.01, grid, 0)
    ri_ref, _, _ = march_segment(*args, backend="torch")
    assert ri_ref.tolist() == [0]  # the sample at t = 0 (x = o) is kept by the reference
    ri_cpp, _, _ = march_segment(*args, backend="auto")
    assert ri_cpp.tolist() == [0]


# ------------------------------------------------------------------------------------------------ grid update


def test_update_marks_density_blob_occupied_and_far_cells_empty():
    """A field whose density is high (100) in a small ball around an off-centre point of a non-cubic box. The ball
    has radius R + h (h: half a cell diagonal), so every point of a cell whose centre lies within R of the
    centre sees the density whatever the jitter. After warm-up updates (every cell evaluated):
    every cell with centre within R is occupied; every cell with centre beyond R + 2h is empty; the occupied
    cells' centres average to the blob centre (no axis mix-up). Later (post-warm-up) updates keep that."""
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]])
    res = 16
    grid = OccupancyGrid(aabb, res)
    assert bool(grid.binary.all())  # starts all occupied
    centre = torch.tensor([0.3, -0.8, 0.6])
    cell = (aabb[1] - aabb[0]) / res
    h = 0.5 * float(cell.norm())
    R = 0.35

    def density(x):
        return 100.0 * ((x - centre).norm(dim=-1) < R + h).float()

    centres = grid.cell_points(torch.arange(res**3), jitter=False)
    dist = (centres - centre).norm(dim=-1)
    blob, far = dist < R, dist > R + 2 * h
    assert int(blob.sum()) >= 10 and int(far.sum()) > 0.9 * res**3

    def check():
        assert bool(grid.binary[blob].all()), "an occupied-blob cell was left empty"
        assert not bool(grid.binary[far].any()), "a far cell is marked occupied"
        occ_centres = centres[grid.binary]
        assert torch.allclose(occ_centres.mean(0), centre, atol=float(cell.max()))
        assert bool(grid.occupied(centre[None])[0])

    for step in (0, 16, 32):  # warm-up: every 16 steps, all cells
        assert grid.update(step, density, step_size=0.02, warmup_steps=256)
    assert not grid.update(33, density, step_size=0.02)  # not a multiple of `every`
    check()
    assert grid.occupancy_fraction() < 0.05
    for step in (256, 272, 288):  # after warm-up: random quarter + occupied cells
        assert grid.update(step, density, step_size=0.02, warmup_steps=256)
    check()


def test_cell_index_and_cell_points_are_inverse():
    """cell_points(i, jitter=False) is the centre of cell i, and cell_index maps it (and any jittered point of
    the cell) back to i; i indexes x-major: i = (ix * R + iy) * R + iz."""
    grid = OccupancyGrid(AABBS[2], 6)
    idx = torch.arange(6**3)
    for jitter in (False, True):
        back, inside = grid.cell_index(grid.cell_points(idx, jitter=jitter))
        assert bool(inside.all()) and torch.equal(back, idx)
    # cell (1, 2, 3): centre lo + (ijk + 0.5) / 6 * extent
    lo, ext = AABBS[2][0], AABBS[2][1] - AABBS[2][0]
    expected = lo + (torch.tensor([1.0, 2.0, 3.0]) + 0.5) / 6 * ext
    assert torch.allclose(grid.cell_points(torch.tensor([(1 * 6 + 2) * 6 + 3]), jitter=False)[0], expected)
