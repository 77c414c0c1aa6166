"""A newcomer's first run: with an empty kernel cache the C++ kernels are built by ``nfkit build-kernels`` (or
before any command starts its clock), saying so with the elapsed time; the following fit builds nothing."""
import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_FIELD, write_sphere_capture

from nfkit.kernels import BUILDING


def nfkit(args, env, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfkit.apps.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_build_kernels_on_an_empty_cache_then_fit_builds_nothing(tmp_path):
    """Compiles the kernels (1-2 min on 2 cores) into a fresh NFKIT_CACHE."""
    env = {**os.environ, "NFKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("NFKIT_NO_KERNELS", None)
    r = nfkit(["build-kernels"], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert BUILDING in r.stderr and "C++ kernels built in " in r.stderr, r.stderr[-2000:]
    assert list((tmp_path / "cache" / "kernels").glob("*/nfkit_cpu.so"))
    data = write_sphere_capture(tmp_path / "cap", n=6, size=8)
    r = nfkit(["fit", str(data), "--out", str(tmp_path / "o"), "--steps", "3", *TINY_FIELD], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "building C++ kernels" not in r.stderr and "built in" not in r.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["steps"] == 3
    r = nfkit(["build-kernels"], env)
    assert r.returncode == 0 and "kernels ready" in r.stderr and "building" not in r.stderr, r.stderr


def test_kernels_are_built_before_the_clock_starts(tmp_path, monkeypatch):
    """``nfkit fit`` calls ``kernels.ensure_built`` before training: a slow build (here a 5 s sleep) does not count
    against the training time."""
    import time

    from nfkit import kernels
    from nfkit.apps.cli import main

    calls = []

    def slow_build():
        calls.append(time.perf_counter())
        time.sleep(5.0)
        return kernels.load()

    monkeypatch.setattr(kernels, "ensure_built", slow_build)
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    assert main(["fit", str(data), "--out", str(tmp_path / "o"), "--steps", "2", *TINY_FIELD]) == 0
    assert len(calls) == 1
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["train_seconds"] < 5.0
    assert main(["info", str(tmp_path / "o" / "field.safetensors")]) == 0 and len(calls) == 1  # info renders nothing
