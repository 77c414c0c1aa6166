"""nfkit: neural fields and 3D reconstruction on torch.

Subpackages: :mod:`nfkit.fields` (field families), :mod:`nfkit.renderers` (cameras, sampling, compositing),
:mod:`nfkit.datasets` (readers), :mod:`nfkit.apps` (command-line applications).
"""
import os as _os
import sys as _sys

# OpenMP threads that spin while waiting (libgomp's default) make torch 10-40x slower as soon as anything else
# wants a core (a browser, a second process): measured 2.9 s instead of 0.10 s per 256^2 viewer frame on 2 busy
# cores. Passive waiting costs little on an idle machine. libgomp reads this when torch loads, so it only takes
# effect when nfkit is imported first; an explicit OMP_WAIT_POLICY is respected.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from nfkit.errors import DatasetError, FieldFileError, NfkitError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["NfkitError", "DatasetError", "FieldFileError", "__version__"]
