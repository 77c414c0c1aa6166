"""Benchmark: samples/s of the CPU kernels against their pure-torch references.

    python bench/kernels.py [--points 65536] [--threads N]

Rows: hash encoding (16 levels x 2 features x 2^19 table), a 4-layer 64-wide MLP (32-64-64-64-4), the whole
hash-grid field (default config), and the renderer's march + composite (lego-like occupancy, 64^3 grid).
"fwd" is no-grad forward; "fwd+bwd" is forward, ``.square().sum().backward()``. Points are uniform random in the
unit cube (no spatial coherence: the worst case for the hash table caches); the field row also reports points
ordered along rays. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
from nfkit.device import cpu_model
import sys
import time

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import torch


def timeit(fn, reps: int = 5, warm: int = 2, max_seconds: float = 20.0) -> float:
    for _ in range(warm):
        fn()
    t0 = time.perf_counter()
    n = 0
    while n < reps and (n == 0 or time.perf_counter() - t0 < max_seconds):
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def fwd_bwd(module_fn, params):
    def run():
        for p in params:
            p.grad = None
        module_fn().float().square().sum().backward()
    return run


def bench_encoding(n: int, backend: str):
    from nfkit.fields.encodings import HashEncoding, HashGridConfig

    enc = HashEncoding(HashGridConfig(16, 2, 19, 16, 1.3819), backend=backend)
    x = torch.rand(n, 3)
    with torch.no_grad():
        f = timeit(lambda: enc(x))
    fb = timeit(fwd_bwd(lambda: enc(x), [enc.params]), reps=3 if backend == "torch" else 5)
    return n / f, n / fb


def bench_mlp(n: int):
    from nfkit.fields.hashgrid import mlp

    net = mlp(32, 64, 3, 4)
    x = torch.randn(n, 32)
    with torch.no_grad():
        f = timeit(lambda: net(x))
    fb = timeit(fwd_bwd(lambda: net(x), list(net.parameters())))
    return n / f, n / fb


def bench_field(n: int, backend: str, ordered: bool):
    from nfkit.fields import build_field

    field = build_field("hashgrid", {"backend": backend, "log2_hashmap_size": 19, "max_resolution": 2048})
    if ordered:  # samples along 512 random rays through the box: the access pattern of training
        o = torch.randn(n // 128, 3)
        o = o / o.norm(dim=-1, keepdim=True) * 4
        d = -o / 4 + 0.2 * torch.randn_like(o)
        d = d / d.norm(dim=-1, keepdim=True)
        t = torch.linspace(2.5, 5.5, 128)
        x = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3).clamp(-1.49, 1.49)
    else:
        x = torch.rand(n, 3) * 3 - 1.5
    dirs = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)

    def out():
        r = field(x, dirs)
        return torch.cat([r.density[:, None], r.rgb], -1)

    with torch.no_grad():
        f = timeit(out)
    fb = timeit(fwd_bwd(out, list(field.parameters())), reps=3 if backend == "torch" else 5)
    return n / f, n / fb


def bench_render(n: int, backend: str):
    """March + composite with a fixed synthetic field (density and colour tensors from a cheap analytic blob)."""
    from nfkit.renderers import OccupancyGrid, march
    from nfkit.renderers.compositing import composite_packed

    aabb = torch.tensor([[-1.5] * 3, [1.5] * 3])
    grid = OccupancyGrid(aabb, 64)
    c = grid.cell_points(torch.arange(64**3), jitter=False)
    grid.binary.copy_(c.norm(dim=-1) < 0.8)  # ~10% occupancy, like lego
    n_rays = max(1, n // 40)
    o = torch.nn.functional.normalize(torch.randn(n_rays, 3), dim=-1) * 4
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn_like(o), dim=-1)
    step = 3**0.5 * 3 / 256
    old = os.environ.get("NFKIT_NO_KERNELS")
    counts = []

    def run(grad: bool):
        ri, t0, t1 = march(o, d, grid, step, stratified=True, backend=backend)
        counts.append(ri.numel())
        xm = o[ri] + d[ri] * ((t0 + t1) / 2)[:, None]
        sig = (10 * (0.8 - xm.norm(dim=-1))).clamp_min(0).requires_grad_(grad)
        rgb = torch.sigmoid(xm).requires_grad_(grad)
        rgb_o, op, dep, _ = composite_packed(sig, rgb, t0, t1, ri, n_rays, torch.ones(3))
        if grad:
            (rgb_o.square().sum() + op.sum()).backward()

    with torch.no_grad():
        f = timeit(lambda: run(False))
    fb = timeit(lambda: run(True))
    if old is not None:
        os.environ["NFKIT_NO_KERNELS"] = old
    s = sum(counts) / len(counts)
    return s / f, s / fb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1 << 16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from nfkit import kernels

    if kernels.load() is None:
        print("C++ kernels unavailable: only reference figures are meaningful")
    n = args.points
    rows = []

    def add(name, fast, ref):
        rows.append((name, fast, ref))
        print(f"{name:<34} {fast[0]:>13,.0f} {fast[1]:>13,.0f} {ref[0]:>13,.0f} {ref[1]:>13,.0f} "
              f"{fast[0] / ref[0]:>6.1f}x {fast[1] / ref[1]:>6.1f}x", flush=True)

    print(f"{n} points, {torch.get_num_threads()} threads, torch {torch.__version__}, {cpu_model()}")
    print(f"{'samples/s':<34} {'fast fwd':>13} {'fast fwd+bwd':>13} {'torch fwd':>13} {'torch fwd+bwd':>13} "
          f"{'fwd':>7} {'f+b':>7}")
    add("hash encoding 16x2x2^19", bench_encoding(n, "auto"), bench_encoding(n, "torch"))
    m = bench_mlp(n)
    add("MLP 32-64-64-64-4 (torch both)", m, m)
    add("hashgrid field (random pts)", bench_field(n, "auto", False), bench_field(n, "torch", False))
    add("hashgrid field (pts along rays)", bench_field(n, "auto", True), bench_field(n, "torch", True))
    add("march + composite", bench_render(n, "auto"), bench_render(n, "torch"))
    field_row = rows[2]
    print(json.dumps({
        "bench": "kernels", "points": n, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "rows": {r[0]: {"fwd": round(r[1][0]), "fwd_bwd": round(r[1][1]), "ref_fwd": round(r[2][0]),
                        "ref_fwd_bwd": round(r[2][1])} for r in rows},
        "field_fwd_bwd_samples_per_s": round(field_row[1][1]),
        "speedup_vs_torch": round(field_row[1][1] / field_row[2][1], 2),
        "encoding_fwd_bwd_samples_per_s": round(rows[0][1][1]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
