"""The CUDA path (``--device cuda`` / ``auto`` on a GPU machine): training, saving, loading, rendering.

Skipped without CUDA. On CUDA the C++ CPU kernels are bypassed (marching, grid update, packed weights: nerfacc
when its CUDA extension loads, else the torch references; hash encoding: tinycudann when importable, else
``hash_encode_levels``), so these tests also compare the CUDA outputs with the CPU ones for the same field.
"""
from __future__ import annotations

import pytest
import torch

from conftest import write_sphere_capture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")

TINY = {"n_levels": 4, "log2_hashmap_size": 12, "hidden": 16, "max_resolution": 64}


def _fit_config(data, out, **kw):
    from nfkit.trainer import FitConfig

    base = dict(data=str(data), out=str(out), steps=150, samples_per_step=1 << 14, grid_resolution=16, device="cuda",
                field_options=dict(TINY), checkpoint_seconds=1e9)
    base.update(kw)
    return FitConfig(**base)


def _load(data):
    from nfkit.datasets import load_dataset

    return load_dataset(data, "train"), load_dataset(data, "test")


@pytest.mark.parametrize("background", ["none", "envmap"])
def test_fit_on_cuda_loss_drops_and_file_loads(tmp_path, background):
    from nfkit import fields
    from nfkit.trainer import Trainer

    data = write_sphere_capture(tmp_path / "cap", n=10, size=24)
    train, test = _load(data)
    tr = Trainer(_fit_config(data, tmp_path / "out", background=background), train, test, progress=False)
    assert tr.field.aabb.is_cuda and tr.grid.binary.is_cuda and tr.pixels.is_cuda
    losses = []
    tr.total_samples = 0
    while not tr.done():
        losses.append(tr.train_step()["loss"])
        tr.step += 1
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, losses
    if background == "envmap":
        assert tr.sparsity > 0 and tr.field.background_model.textures[0].is_cuda
        tr.refresh_grid()
    tr.elapsed = 1.0
    m = tr.write_outputs()
    # RGBA data evaluates on white; a field with an envmap is drawn over its own (grey) background instead
    assert m["psnr"] is not None and m["psnr"] > (12 if background == "none" else 3), m
    f_cpu = fields.load(tmp_path / "out" / "field.safetensors")
    f_gpu = fields.load(tmp_path / "out" / "field.safetensors", device="cuda")
    assert f_gpu.aabb.is_cuda and not f_cpu.aabb.is_cuda
    x = torch.rand(1000, 3) * 2 - 1
    torch.testing.assert_close(f_gpu.density(x.cuda()).cpu(), f_cpu.density(x), rtol=1e-3, atol=1e-3)


def test_checkpoint_resume_on_cuda(tmp_path):
    from nfkit.trainer import Trainer

    data = write_sphere_capture(tmp_path / "cap", n=8, size=16)
    train, test = _load(data)
    tr = Trainer(_fit_config(data, tmp_path / "out", steps=5), train, test, progress=False)
    tr.fit()
    tr2 = Trainer(_fit_config(data, tmp_path / "out", steps=8, resume=True), train, test, progress=False)
    tr2.fit()  # fused Adam: moments and step on the parameters' device
    assert tr2.step == 8
    st = next(iter(tr2.optimizer.state.values()))
    assert st["exp_avg"].is_cuda


def _field_and_grid(device):
    from nfkit import fields
    from nfkit.renderers import OccupancyGrid

    torch.manual_seed(0)
    f = fields.build_field("hashgrid", dict(TINY), torch.tensor([[-1.5] * 3, [1.5] * 3]))
    with torch.no_grad():
        f.encoding.params.normal_(0, 0.5)
    g = OccupancyGrid(f.aabb, 16)  # all cells occupied: both devices march the same samples
    return f.to(device).eval(), g.to(device)


def test_render_rays_cpu_vs_cuda():
    from nfkit.renderers import RenderOptions, render_rays

    f_cpu, g_cpu = _field_and_grid("cpu")
    f_gpu, g_gpu = _field_and_grid("cuda")
    torch.manual_seed(1)
    o = torch.randn(512, 3)
    o = 3.5 * o / o.norm(dim=-1, keepdim=True)
    d = -o / o.norm(dim=-1, keepdim=True) + 0.2 * torch.randn(512, 3)
    d = d / d.norm(dim=-1, keepdim=True)
    opts = RenderOptions(step_size=3 * 3**0.5 / 128)
    bg = torch.tensor([1.0, 1.0, 1.0])
    with torch.no_grad():
        a = render_rays(f_cpu, g_cpu, o, d, opts, bg)
        b = render_rays(f_gpu, g_gpu, o.cuda(), d.cuda(), opts, bg.cuda())
    assert b["rgb"].is_cuda and abs(a["n_samples"] - b["n_samples"]) <= 0.001 * a["n_samples"] + 2
    assert float(a["opacity"].mean()) > 0.05  # a non-trivial field
    for k in ("rgb", "opacity"):
        torch.testing.assert_close(b[k].cpu(), a[k], rtol=0, atol=2e-3)


def test_render_image_from_cuda_field_comes_back_on_cpu():
    from nfkit.renderers import RenderOptions, render_image
    from nfkit.renderers.background import render_image_bg
    from nfkit.renderers.loading import camera_from_pose

    from conftest import look_at_c2w
    import numpy as np

    f_cpu, g_cpu = _field_and_grid("cpu")
    f_gpu, g_gpu = _field_and_grid("cuda")
    cams = camera_from_pose(torch.tensor(look_at_c2w(np.array([3.0, 2.0, 1.0])), dtype=torch.float32), 24, 20)
    opts = RenderOptions(step_size=3 * 3**0.5 / 128)
    white = torch.ones(3)
    a = render_image(f_cpu, g_cpu, cams, 0, opts, white)
    for fn in (render_image, render_image_bg):
        b = fn(f_gpu, g_gpu, cams, 0, opts, white)
        assert b["rgb"].shape == (20, 24, 3) and b["rgb"].device.type == "cpu"
        torch.testing.assert_close(b["rgb"], a["rgb"], rtol=0, atol=5e-3)


def test_hash_encoding_cuda_matches_cpu():
    from nfkit.fields.encodings import HashEncoding, HashGridConfig

    torch.manual_seed(0)
    enc = HashEncoding(HashGridConfig(n_levels=16, log2_hashmap_size=14))
    with torch.no_grad():
        enc.params.normal_(0, 0.1)
    x = torch.rand(4096, 3)
    a = enc(x)
    b = enc.to("cuda")(x.cuda())
    torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-5)


def test_load_renderable_on_cuda(tmp_path):
    from nfkit import fields
    from nfkit.renderers.loading import load_renderable

    f, g = _field_and_grid("cuda")
    fields.save(f, tmp_path / "f.safetensors", extra_tensors={f"occgrid.{k}": v for k, v in g.state_dict().items()})
    field, grid, opts, meta = load_renderable(tmp_path / "f.safetensors", device="cuda")
    assert field.aabb.is_cuda and grid.binary.is_cuda and grid.resolution == 16
