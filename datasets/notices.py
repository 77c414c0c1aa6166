"""One-line notices from the readers (a downscale, skipped frames) on stderr, each said once per process."""
from __future__ import annotations

import sys

_SAID: set[str] = set()


def notice(message: str) -> None:
    """Prints ``nfkit: <message>`` to stderr, unless the same message was already printed (train and test splits
    of one dataset are read separately but say it once)."""
    if message in _SAID:
        return
    _SAID.add(message)
    print(f"nfkit: {message}", file=sys.stderr, flush=True)
