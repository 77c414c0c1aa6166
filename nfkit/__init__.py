"""nfkit: neural fields and 3D reconstruction on torch.

Subpackages: :mod:`nfkit.fields` (field families), :mod:`nfkit.renderers` (cameras, sampling, compositing),
:mod:`nfkit.datasets` (readers), :mod:`nfkit.apps` (command-line applications).
"""
import os as _os
import sys as _sys

# libgomp's threads spin while they wait for work. Spinning without limit made 256^2 viewer renders 2.9 s instead
# of 0.10 s when other processes wanted the 2 cores; not spinning at all (OMP_WAIT_POLICY=PASSIVE) cost 11% of
# the training throughput on an idle machine. A short spin (GOMP_SPINCOUNT=10000) kept the idle speed (706k vs
# 701k samples/s) and 0.26 s per frame under that load. libgomp reads it when torch loads, so it only takes effect
# when nfkit is imported first; the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "torch" not in _sys.modules and not ({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ)):
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from nfkit.errors import DatasetError, FieldFileError, NfkitError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["NfkitError", "DatasetError", "FieldFileError", "__version__"]
