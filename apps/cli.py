"""The ``nfkit`` console script: ``nfkit fit ...`` (more subcommands arrive with later apps)."""
from __future__ import annotations

import argparse
import sys


def guarded(fn) -> int:
    """Run ``fn``; bad input (NfkitError) becomes one line on stderr and exit code 2, no traceback."""
    from nfkit.errors import NfkitError

    try:
        fn()
    except NfkitError as e:
        print(f"nfkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfkit: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv=None) -> int:
    from nfkit.apps import fit_scene

    parser = argparse.ArgumentParser(prog="nfkit", description="neural fields and 3D reconstruction")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_scene.build_parser(sub.add_parser("fit", help="fit a field to a posed capture"))
    ns = parser.parse_args(argv)
    if ns.command == "fit":
        return guarded(lambda: fit_scene.run(ns))
    return 2


if __name__ == "__main__":
    sys.exit(main())
