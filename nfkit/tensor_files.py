"""Reading an nfkit safetensors file that is not a field (an encoder, a classifier): tensors and JSON metadata in
one pass, with one-line errors. Field files have their own checks (``fields/io.py``); writing goes through
:mod:`nfkit.atomic`."""
from __future__ import annotations

from pathlib import Path

from nfkit.errors import FieldFileError


def read_tensor_file(path, fmt: str, what: str, made_by: str) -> tuple[dict, dict]:
    """(tensors {name: tensor}, metadata {str: str}) of the safetensors file ``path`` whose metadata ``format``
    is ``fmt``. FieldFileError (one line naming the file) when it is missing, not a safetensors file, or another
    format; ``what`` ("classifier file") and ``made_by`` ("nfkit triplanes train") word the messages."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FieldFileError(f"{path}: no such {what} (write one with {made_by})")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:  # safetensors' own error types for truncated or foreign files
        raise FieldFileError(f"{path}: unreadable {what} ({type(e).__name__}: {str(e)[:100]})") from None
    if meta.get("format") != fmt:
        raise FieldFileError(f"{path}: not a {what} (made by {made_by}); its format is {meta.get('format')!r}")
    return tensors, meta
