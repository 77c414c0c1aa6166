"""``nfkit build-kernels``: compile the C++ CPU kernels now (``make install`` runs it), so that no command's
first run spends its time budget compiling. A no-op when they are already in the cache (``$NFKIT_CACHE`` or
``~/.cache/nfkit``)."""
from __future__ import annotations

import argparse
import sys


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return p


def run(ns: argparse.Namespace | None = None) -> bool:
    """Build (or find) the kernels; prints what happened. Returns whether they are available."""
    from nfkit import kernels

    cached = kernels.is_built()
    mod = kernels.ensure_built()  # prints the building message and the elapsed time when it compiles
    if mod is None:
        print("nfkit: C++ kernels unavailable (see the warning above, or NFKIT_NO_KERNELS is set); "
              "commands use the slower pure-torch reference", file=sys.stderr)
        return False
    if cached:
        print(f"nfkit: kernels ready ({kernels._build_dir()})", file=sys.stderr)
    return True
