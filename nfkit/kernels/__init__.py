"""Lazily compiled C++/OpenMP CPU kernels.

:func:`load` builds ``csrc/*.cpp`` with ``torch.utils.cpp_extension`` on first use (ninja, cached under
``~/.cache/nfkit/kernels/<hash>``, keyed by the sources, torch version and CPU) and returns the module. If no
compiler is available, or ``NFKIT_NO_KERNELS=1`` is set, it warns once and returns ``None``; every caller then
uses its pure-torch reference. Loading also raises glibc's mmap/trim thresholds (see ``csrc/malloc_tuning.cpp``;
``NFKIT_NO_MALLOPT=1`` opts out), which removes page-fault costs from the large tensors of every training step.

A compile takes 1-2 minutes on 2 cores; whenever :func:`load` compiles it says so on stderr (once, with the
elapsed time). Commands that train or render call :func:`ensure_built` before any clock starts (``nfkit`` does it
in its dispatch), so a first run's compile never counts against ``--max-seconds``; ``nfkit build-kernels`` (run
by ``make install``) builds them ahead of time. ``NFKIT_CACHE`` moves the cache (CI uses an empty one).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

_SRC = Path(__file__).parent / "csrc"
_lock = threading.Lock()
_state: dict = {}
MODULE = "nfkit_cpu"
BUILDING = "nfkit: building C++ kernels (first run only, ~1-2 min)..."


def _build_dir() -> Path:
    h = hashlib.sha1()
    for f in sorted(_SRC.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(str(_SRC.resolve()).encode())  # ninja files hold absolute paths: one build per checkout
    h.update(torch.__version__.encode())
    h.update(platform.machine().encode())
    try:
        h.update(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].encode())
    except (OSError, IndexError):
        pass
    root = cache_root() / "kernels" / h.hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_root() -> Path:
    """``$NFKIT_CACHE`` or ``~/.cache/nfkit``."""
    return Path(os.environ.get("NFKIT_CACHE", Path.home() / ".cache" / "nfkit"))


def is_built() -> bool:
    """Whether the compiled module for these sources, torch and CPU is already in the cache."""
    return (_build_dir() / f"{MODULE}.so").is_file()


def ensure_built():
    """Build (or load) the kernels now, before any clock starts: the module, or None when they cannot be built.
    On a CUDA machine nerfacc's CUDA extension is loaded (or JIT-built, with its own message) here too."""
    mod = load()
    import torch

    if torch.cuda.is_available():
        from nfkit.renderers import nerfacc_backend

        nerfacc_backend.usable("cuda")
    return mod


def load():
    """The compiled kernel module, or ``None`` (after one warning) when it cannot be built."""
    if "mod" in _state:
        return _state["mod"]
    with _lock:
        if "mod" in _state:
            return _state["mod"]
        mod = None
        if os.environ.get("NFKIT_NO_KERNELS", "0") not in ("", "0"):
            _state["mod"] = None
            return None
        try:
            from torch.utils import cpp_extension

            flags = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
            compiling = not is_built()
            if compiling:
                print(BUILDING, file=sys.stderr, flush=True)
                t0 = time.perf_counter()
            mod = cpp_extension.load(
                name=MODULE,
                sources=[str(p) for p in sorted(_SRC.glob("*.cpp"))],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(_build_dir()),
                verbose=False,
            )
            if compiling:
                print(f"nfkit: C++ kernels built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        except Exception as e:  # no compiler, no ninja, broken toolchain: fall back to torch
            warnings.warn(
                f"nfkit: could not build the C++ CPU kernels ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "using the slower pure-torch reference. Install a C++ compiler (e.g. apt-get install g++) to enable them.",
                stacklevel=2,
            )
            mod = None
        if mod is not None and os.environ.get("NFKIT_NO_MALLOPT", "0") in ("", "0"):
            # Large tensors are allocated and freed every step; keep them in the heap instead of mmap/munmap
            # (avoids page faults on each first touch). 1 GiB thresholds; NFKIT_NO_MALLOPT=1 opts out.
            mod.tune_malloc(1 << 30, 1 << 30)
        _state["mod"] = mod
        return mod


def available() -> bool:
    return load() is not None

