"""Without a working compiler the kernels fall back to the torch reference with one warning, and fitting works."""
import os
import subprocess
import sys
import textwrap


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    code = textwrap.dedent("""
        import warnings, torch
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as rec:
            from nfkit import kernels
            assert kernels.load() is None
            assert kernels.load() is None  # cached: no second build attempt, no second warning
            from nfkit.fields import build_field
            f = build_field("hashgrid", {"n_levels": 4, "log2_hashmap_size": 10, "hidden": 16})
            x = torch.rand(64, 3) * 3 - 1.5
            out = f(x, torch.nn.functional.normalize(torch.randn(64, 3), dim=-1))
            (out.rgb.sum() + out.density.sum()).backward()
            assert f.encoding.params.grad is not None
        msgs = [str(w.message) for w in rec if "C++ CPU kernels" in str(w.message)]
        print(len(msgs))
    """)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), CC=str(tmp_path / "no-such-compiler"),
               NFKIT_CACHE=str(tmp_path / "cache"))
    env.pop("NFKIT_NO_KERNELS", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "1"
