"""The ``nfkit`` console script: ``nfkit fit ...``, ``nfkit fit-image ...``, ``nfkit fit-sdf ...``, ``nfkit view ...``,
``nfkit render ...``, ``nfkit convert / export / info / eval ...``, ``nfkit build-kernels``,
``nfkit triplanes make-shapes / fit / train / classify``, ``nfkit sfm``, ``nfkit wireframe``,
``nfkit ponder pretrain / probe``.

Every failure a user can cause ends with one ``nfkit: error: ...`` line on stderr and exit code 2 (:func:`guarded`):
bad values and files (:class:`~nfkit.errors.NfkitError`), unparsable arguments, and OS errors (permission, a folder
where a file is expected, a full disk). Commands that train or render build the C++ kernels first
(:func:`nfkit.kernels.ensure_built`), before any clock starts.
"""
from __future__ import annotations

import argparse
import sys

# Commands that run the kernels: they are built (or loaded) before the command starts its clock.
USES_KERNELS = ("fit", "fit-image", "fit-sdf", "convert", "export", "view", "render", "eval")
# Commands that run as several torchrun ranks (nfkit.distributed): data-parallel fitting, and sharded work lists
DATA_PARALLEL = ("fit", "triplanes fit", "convert", "export")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one ``nfkit: error:`` line (exit code 2) instead of usage + message."""

    def error(self, message):
        print(f"nfkit: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def os_error_line(e: OSError) -> str:
    """One line for an OS error: the file(s) and the system's reason (``[Errno 13] Permission denied`` ...)."""
    what = e.strerror or type(e).__name__
    names = [str(f) for f in (e.filename, e.filename2) if f is not None]
    return f"{' -> '.join(names)}: {what}" if names else " ".join(str(e).split())[:200] or what


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")))


def guarded(fn) -> int:
    """Run ``fn``; bad input (NfkitError), OS errors and running out of memory become one line on stderr and exit
    code 2, no traceback."""
    from nfkit.distributed import rank_prefix
    from nfkit.errors import NfkitError

    try:
        fn()
    except NfkitError as e:
        print(f"nfkit: error: {rank_prefix()}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"nfkit: error: {rank_prefix()}{os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfkit: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        print(f"nfkit: error: out of memory ({' '.join(str(e).split())[:120]}); use smaller sizes or resolutions",
              file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nfkit.apps import build_kernels, camera_path, convert, eval as eval_app, export, fit_image, fit_scene, fit_sdf
    from nfkit.apps import viewer
    from nfkit.apps.ponder import cli as ponder_cli
    from nfkit.apps.sfm import cli as sfm_cli
    from nfkit.apps.triplanes import cli as triplanes_cli
    from nfkit.apps.wireframe import cli as wireframe_cli

    parser = OneLineParser(prog="nfkit", description="neural fields and 3D reconstruction")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_scene.build_parser(sub.add_parser("fit", help="fit a field to a posed capture"))
    fit_image.build_parser(sub.add_parser("fit-image", help="fit a 2-D field xy -> rgb to an image"))
    fit_sdf.build_parser(sub.add_parser("fit-sdf", help="fit a 3-D shape field (SDF or occupancy) to a mesh"))
    viewer.build_parser(sub.add_parser("view", help="look at a field in the browser (viser)"))
    camera_path.build_parser(sub.add_parser("render", help="render a camera path of a field to mp4"))
    convert.build_parser(sub.add_parser("convert", help="distil a field into another family (PVD)"))
    export.build_parser(sub.add_parser("export", help="export a field as a mesh and/or a point cloud"))
    convert.build_info_parser(sub.add_parser("info", help="family, parameters, bounds, format of a field file"))
    eval_app.build_parser(sub.add_parser("eval", help="PSNR / SSIM of a field file on a dataset's views (JSON)"))
    build_kernels.build_parser(sub.add_parser("build-kernels", help="compile the C++ CPU kernels now (first run)"))
    triplanes_cli.build_parser(sub.add_parser("triplanes", help="fit tri-planes to many shapes; classify the fields"))
    sfm_cli.build_parser(sub.add_parser("sfm", help="neural structure-from-motion on an SDF level set (Level-S2fM)"))
    wireframe_cli.build_parser(sub.add_parser("wireframe", help="3D wireframe from 2D line segments (NEAT)"))
    ponder_cli.build_parser(sub.add_parser("ponder", help="pretrain a point-cloud encoder by rendering (PonderV2)"))
    return parser


def commands() -> dict:
    from nfkit.apps import build_kernels, camera_path, convert, eval as eval_app, export, fit_image, fit_scene, fit_sdf
    from nfkit.apps import viewer
    from nfkit.apps.ponder import cli as ponder_cli
    from nfkit.apps.sfm import cli as sfm_cli
    from nfkit.apps.triplanes import cli as triplanes_cli
    from nfkit.apps.wireframe import cli as wireframe_cli

    return {"fit": fit_scene.run, "fit-image": fit_image.run, "fit-sdf": fit_sdf.run, "view": viewer.run,
            "render": camera_path.run, "convert": convert.run, "export": export.run, "info": convert.run_info,
            "eval": eval_app.run, "build-kernels": build_kernels.run,
            "triplanes": triplanes_cli.run, "sfm": sfm_cli.run, "wireframe": wireframe_cli.run,
            "ponder": ponder_cli.run}


def _wants_cuda(ns) -> bool:
    """Whether the command will train on CUDA (then the ranks talk over NCCL, else gloo)."""
    import torch

    return str(getattr(ns, "device", "auto") or "auto").startswith(("auto", "cuda")) and torch.cuda.is_available()


def main(argv=None) -> int:
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error, already printed on one line (2)
        return e.code if isinstance(e.code, int) else 2
    run = commands()[ns.command]

    def go():
        from nfkit.apps.cli_config import check_options

        check_options(ns.command, ns)
        from nfkit import distributed
        from nfkit.errors import NfkitError

        if distributed.launched():  # one rank of a torchrun job (docs/SCALING.md)
            name = " ".join([ns.command] + [getattr(ns, f"{ns.command.replace('-', '_')}_command", None) or ""]).strip()
            if name not in DATA_PARALLEL:
                raise NfkitError(f"nfkit {name} runs in one process; under torchrun only "
                                 f"{', '.join(f'nfkit {c}' for c in DATA_PARALLEL)} run as several ranks")
            distributed.init(use_cuda=_wants_cuda(ns))
        try:
            if ns.command in USES_KERNELS:
                from nfkit import kernels

                distributed.run_once(kernels.ensure_built)  # rank 0 compiles, the others load its build
            run(ns)
        finally:
            distributed.shutdown()

    return guarded(go)


if __name__ == "__main__":
    sys.exit(main())
