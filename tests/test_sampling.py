"""Occupancy-grid marching keeps exactly the candidate samples in occupied cells; the grid update finds density."""
import torch

from nfkit.renderers import OccupancyGrid
from nfkit.renderers.cameras import ray_aabb
from nfkit.renderers.sampling import march_reference, march_segment


def _random_setup(seed, n_rays=300, res=16):
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.5, -1], [1.5, 1, 1.2]]), res)
    grid.binary.copy_(torch.rand(res**3, generator=g) < 0.3)
    o = torch.randn(n_rays, 3, generator=g) * 3
    d = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g) - 0.3 * o, dim=-1)
    tn, tf = ray_aabb(o, d, grid.aabb)
    jitter = torch.rand(n_rays, generator=g)
    return grid, o, d, tn, tf, jitter


def _brute_force(grid, o, d, tn, tf, jitter, step):
    out = []
    for r in range(o.shape[0]):
        k = 0
        while True:
            t = float(tn[r] + (k + jitter[r]) * step)
            if not t < float(tf[r]):
                break
            if bool(grid.occupied((o[r] + t * d[r])[None])[0]):
                out.append((r, round(t, 4)))
            k += 1
    return out


def test_march_keeps_every_occupied_candidate_and_nothing_else():
    step = 0.07
    for seed in range(3):
        grid, o, d, tn, tf, jitter = _random_setup(seed)
        ri_ref, t_ref, _ = march_reference(o, d, tn, tf, jitter, step, grid.binary, grid.aabb, grid.resolution)
        ri, t, _ = march_segment(o, d, tn, tf, jitter, step, grid)  # C++ when it builds
        assert torch.equal(ri, ri_ref) and torch.allclose(t, t_ref, atol=1e-6)
        assert bool((ri[1:] >= ri[:-1]).all())  # rays in increasing order
        brute = _brute_force(grid, o[:40], d[:40], tn[:40], tf[:40], jitter[:40], step)
        m = ri_ref < 40
        got = [(int(a), round(float(b), 4)) for a, b in zip(ri_ref[m], t_ref[m])]
        assert got == brute


def test_capped_march_continues_where_it_stopped():
    grid, o, d, tn, tf, jitter = _random_setup(5)
    step = 0.05
    full_ri, full_t, _ = march_segment(o, d, tn, tf, jitter, step, grid)
    pieces, t_cur = [], tn.clone()
    for _ in range(200):
        ri, t, t_next = march_segment(o, d, t_cur, tf, jitter, step, grid, max_per_ray=3)
        pieces.append((ri, t))
        if not bool((t_next < tf).any()):
            break
        t_cur = t_next
    ri_all = torch.cat([p[0] for p in pieces])
    t_all = torch.cat([p[1] for p in pieces])
    order = torch.argsort(ri_all * 1000 + t_all, stable=True)
    assert torch.equal(ri_all[order], full_ri)
    assert torch.allclose(t_all[order], full_t, atol=1e-4)
    for ri, _ in pieces:  # never more than 3 per ray per call
        assert int(torch.bincount(ri).max()) <= 3 if ri.numel() else True


def test_grid_update_marks_a_density_blob_and_keeps_empty_space_empty():
    grid = OccupancyGrid(torch.tensor([[-1.5] * 3, [1.5] * 3]), 32)
    centre, radius = torch.tensor([0.3, -0.2, 0.1]), 0.4

    def density(x):
        return 50.0 * ((x - centre).norm(dim=-1) < radius).float()

    for step in range(0, 64, 16):
        grid.update(step, density, step_size=0.02)
    pts = grid.cell_points(torch.arange(32**3), jitter=False)
    dist = (pts - centre).norm(dim=-1)
    assert bool(grid.binary[dist < radius - 0.1].all())  # no blob cell left empty
    assert not bool(grid.binary[dist > radius + 0.2].any())  # far cells empty
