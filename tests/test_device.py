"""The ``device`` option (``nfkit fit --device``) on a machine without CUDA, and the device-independent pieces of
the CUDA path that run on the CPU too (the level-vectorised hash encoding, the torch SSIM, ``Cameras.to``).
The CUDA runs themselves are in ``tests/test_cuda.py`` (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

from nfkit.apps.cli import main
from nfkit.device import resolve_device
from nfkit.errors import NfkitError
from nfkit.fields.encodings import HashGridConfig, hash_encode_levels, hash_encode_reference, level_layout

from conftest import TINY_FIELD

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NfkitError, match="--device"):
        resolve_device("tpu")


@no_cuda
def test_cuda_without_cuda_is_one_clear_error():
    with pytest.raises(NfkitError) as e:
        resolve_device("cuda")
    msg = str(e.value)
    assert "--device cuda" in msg and "not available" in msg and "\n" not in msg


@no_cuda
def test_fit_device_cuda_without_cuda_exits_2(sphere_capture, tmp_path, capsys):
    rc = main(["fit", str(sphere_capture), "--out", str(tmp_path / "o"), "--steps", "1", "--device", "cuda",
               *TINY_FIELD])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("nfkit: error:") and "--device" in err[0]


def test_fit_device_cpu_explicit(sphere_capture, tmp_path):
    from nfkit import fields

    out = tmp_path / "o"
    assert main(["fit", str(sphere_capture), "--out", str(out), "--steps", "3", "--device", "cpu", *TINY_FIELD]) == 0
    field = fields.load(out / "field.safetensors", device="cpu")
    assert field.aabb.device.type == "cpu"


@pytest.mark.parametrize("cfg", [HashGridConfig(n_levels=6, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0),
                                 HashGridConfig(n_levels=16, log2_hashmap_size=12)])
def test_hash_encode_levels_matches_reference(cfg):
    """The CUDA fallback encoding (all levels at once) gives the reference's values and parameter gradients."""
    torch.manual_seed(0)
    n = int(level_layout(cfg)[2][-1]) * cfg.n_features_per_level
    p1 = torch.randn(n, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_(True)
    x = torch.rand(500, 3)
    x[:4] = torch.tensor([[0.0, 0, 0], [1, 1, 1], [0, 1, 0.5], [0.5, 0.5, 0.5]])
    a, b = hash_encode_reference(x, p1, cfg), hash_encode_levels(x, p2, cfg)
    torch.testing.assert_close(b, a, rtol=0, atol=2e-6)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-5, atol=2e-5)


def test_ssim_torch_matches_kornia():
    kornia = pytest.importorskip("kornia")
    from nfkit.metrics import ssim_torch

    torch.manual_seed(0)
    a = torch.rand(1, 3, 24, 30)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    torch.testing.assert_close(ssim_torch(a, b), kornia.metrics.ssim(a, b, 11), rtol=0, atol=2e-5)


def test_cameras_to_keeps_rays():
    from nfkit.renderers.cameras import Cameras, pixel_rays

    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    cams = Cameras(torch.eye(4)[None], one(10), one(10), one(8), one(8), 16, 16, torch.zeros(1, 5))
    moved = cams.to("cpu")
    idx = torch.zeros(3, dtype=torch.long)
    u = torch.tensor([0, 5, 15])
    for a, b in zip(pixel_rays(cams, idx, u, u), pixel_rays(moved, idx, u, u)):
        torch.testing.assert_close(a, b)
