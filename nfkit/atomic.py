"""Atomic file writes: write to a temporary name beside the target, then rename (never half-written)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path, obj) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
    return path
