"""Lazily compiled C++/OpenMP CPU kernels.

:func:`load` builds ``csrc/*.cpp`` with ``torch.utils.cpp_extension`` on first use (ninja, cached under
``~/.cache/nfkit/kernels/<hash>``, keyed by the sources, torch version and CPU) and returns the module. If no
compiler is available, or ``NFKIT_NO_KERNELS=1`` is set, it warns once and returns ``None``; every caller then
uses its pure-torch reference. Loading also raises glibc's mmap/trim thresholds (see ``csrc/malloc_tuning.cpp``;
``NFKIT_NO_MALLOPT=1`` opts out), which removes page-fault costs from the large tensors of every training step.
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

_SRC = Path(__file__).parent / "csrc"
_lock = threading.Lock()
_state: dict = {}


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
    root = Path(os.environ.get("NFKIT_CACHE", Path.home() / ".cache" / "nfkit")) / "kernels" / h.hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    return root


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
            mod = cpp_extension.load(
                name="nfkit_cpu",
                sources=[str(p) for p in sorted(_SRC.glob("*.cpp"))],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(_build_dir()),
                verbose=False,
            )
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

