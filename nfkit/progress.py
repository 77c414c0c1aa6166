"""One progress bar for every long command (tqdm): live on a terminal, a line every 30 s in a log file."""
from __future__ import annotations

import sys


def progress_bar(**kwargs):
    """``tqdm(**kwargs)`` writing to stderr. When stderr is not a terminal (CI logs, ``cmd > log 2>&1``) the bar
    redraws at most every 30 s, so a log holds a readable line per half minute instead of ten per second."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs["mininterval"] = max(30.0, float(kwargs.get("mininterval", 0.0)))
    return tqdm(**kwargs)
