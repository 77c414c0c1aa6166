"""Choosing the torch device: ``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda[:N]``.

The CPU is the product's first target; CUDA switches on by itself when ``torch.cuda.is_available()`` and is never
required. On CUDA the C++ CPU kernels are bypassed: marching, the occupancy-grid update and the packed
compositing use nerfacc when its CUDA extension loads (:mod:`nfkit.renderers.nerfacc_backend`), else the torch
references; the hash encoding uses tinycudann when it imports, else the level-vectorised torch encoding.
"""
from __future__ import annotations

import torch

from nfkit.errors import NfkitError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / None -> cuda if available else cpu; ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` (checked).

    Raises :class:`NfkitError` (one line, naming ``--device``) for an unknown name or CUDA without a GPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise NfkitError(f"--device {name}: CUDA is not available ({why}, torch {torch.__version__}); "
                             "use --device cpu or --device auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NfkitError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise NfkitError(f"--device must be auto, cpu or cuda[:N], got {name!r}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :mod:`platform`'s), for benchmark records."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
