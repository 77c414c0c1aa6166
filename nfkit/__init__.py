"""nfkit: neural fields and 3D reconstruction on torch.

Subpackages: :mod:`nfkit.fields` (field families), :mod:`nfkit.renderers` (cameras, sampling, compositing),
:mod:`nfkit.datasets` (readers), :mod:`nfkit.apps` (command-line applications).
"""
from nfkit.errors import DatasetError, FieldFileError, NfkitError

__version__ = "0.1.0"
__all__ = ["NfkitError", "DatasetError", "FieldFileError", "__version__"]
