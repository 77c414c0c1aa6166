"""The ``nfkit`` console script: ``nfkit fit ...``, ``nfkit fit-image ...``, ``nfkit fit-sdf ...``, ``nfkit view ...``,
``nfkit render ...``."""
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
    from nfkit.apps import camera_path, fit_image, fit_scene, fit_sdf, viewer

    parser = argparse.ArgumentParser(prog="nfkit", description="neural fields and 3D reconstruction")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_scene.build_parser(sub.add_parser("fit", help="fit a field to a posed capture"))
    fit_image.build_parser(sub.add_parser("fit-image", help="fit a 2-D field xy -> rgb to an image"))
    fit_sdf.build_parser(sub.add_parser("fit-sdf", help="fit a 3-D shape field (SDF or occupancy) to a mesh"))
    viewer.build_parser(sub.add_parser("view", help="look at a field in the browser (viser)"))
    camera_path.build_parser(sub.add_parser("render", help="render a camera path of a field to mp4"))
    from nfkit.apps import convert, export  # issue 5: convert / export / info
    convert.build_parser(sub.add_parser("convert", help="distil a field into another family (PVD)"))
    export.build_parser(sub.add_parser("export", help="export a field as a mesh and/or a point cloud"))
    convert.build_info_parser(sub.add_parser("info", help="family, parameters, bounds, format of a field file"))
    ns = parser.parse_args(argv)
    if ns.command == "fit":
        return guarded(lambda: fit_scene.run(ns))
    if ns.command == "fit-image":
        return guarded(lambda: fit_image.run(ns))
    if ns.command == "fit-sdf":
        return guarded(lambda: fit_sdf.run(ns))
    if ns.command == "view":
        return guarded(lambda: viewer.run(ns))
    if ns.command == "render":
        return guarded(lambda: camera_path.run(ns))
    if ns.command in ("convert", "export", "info"):
        return guarded(lambda: {"convert": convert.run, "export": export.run, "info": convert.run_info}[ns.command](ns))
    return 2


if __name__ == "__main__":
    sys.exit(main())
