"""``nfkit fit DATA --out DIR``: fit a field to a posed capture and write metrics, the field file and renders.

Runnable as ``python apps/fit_scene.py DATA --out DIR`` with the same arguments as ``nfkit fit``.

A video, image folder or COLMAP model (a *capture*) is first posed into ``DIR/transforms.json``
(:func:`nfkit.datasets.capture.prepare_capture`). Every fit trains for at most 300 s or 5000 steps by default
(FitConfig; sized for 2 CPU cores: the whole command in about 10 minutes). Captures also get ``DIR/orbit.mp4``
(:mod:`nfkit.apps.orbit`) and ``DIR/mesh.ply``; SDF fields
(``--field neus``) get ``DIR/mesh.ply`` from their zero level set whatever the input.
``metrics.json`` is removed when a run starts and written only when it succeeds, with ``timings_s`` per stage.
``DIR/config.json`` (the resolved options) is written when training starts; ``nfkit fit --config DIR/config.json``
runs it again, with any flag given on the command line taking precedence over the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from nfkit.apps.cli_config import add_dataclass_args, check_options, dataclass_from_args
from nfkit.apps.interrupt import sigterm_as_interrupt
from nfkit.trainer import FitConfig

POSERS = ("colmap", "neural")  # FitConfig.poses: pycolmap's mapper, or nfkit sfm (apps/sfm/poser.py)

HELP = {
    "data": "dataset: a Blender folder (transforms_train.json ...), a nerfstudio/instant-ngp transforms.json, IDR/DTU "
            "cameras.npz, LLFF poses_bounds.npy, a Middlebury *_par.txt folder, or a capture (video, image folder, "
            "COLMAP model)",
    "max_side": "downscale training images so the larger side is at most this (0: full resolution)",
    "allow_outside_paths": "accept transforms.json image paths that are absolute or leave the dataset folder",
    "out": "output folder (metrics.json, field.safetensors, renders/, checkpoint/)",
    "field": "field family",
    "steps": "training steps",
    "max_seconds": "stop after this many seconds of training, or at --steps if sooner (0: no time limit; "
                   "the default of 300 s is sized for 2 CPU cores)",
    "lr": "base learning rate, decayed to --lr-final of itself over the run (0: the family's default: 4e-2 rbf, "
          "2e-2 triplane, 1e-2 the others)",
    "lr_final": "the learning rate at the end of the run, as a fraction of the base rate (exponential decay; 0: the "
                "family's default: 0.3 for the grids, 0.03 for mlp and cam)",
    "resume": "continue from DIR/checkpoint",
    "field_options": "field config overrides, e.g. hidden=32",
    "frames": "frames chosen from a video input",
    "background": "model of what lies beyond the AABB: auto (a learned environment map for RGB data, none "
                  "for RGBA), envmap, none",
    "sparsity": "weight of an L1 prior on the opacity at random points of the AABB, emptying space no view "
                "explains (-1: 0.05 with a background model for density fields, else 0)",
    "samples_per_step": "samples a training step (rays adapt to it; 0: the family's default: 65536, 16384 for neus)",
    "eikonal_weight": "SDF fields: weight of the eikonal term (|grad f| - 1)^2",
    "mask_weight": "SDF fields: weight of the mask term (BCE of the rendered opacity against alpha; RGBA data only)",
    "curvature_weight": "SDF fields: weight of the normal-smoothness term (0: off)",
    "anneal_fraction": "SDF fields: NeuS's cosine annealing ramps 0 -> 1 over this fraction of the run",
    "poses": "how a capture (video, image folder) is posed: colmap (pycolmap's incremental mapper) or neural "
             "(nfkit sfm: neural SfM on an SDF level set; slower)",
}
UNSET = object()  # default of every option on the command line: tells given flags from the file's / defaults
ORBIT_FRAMES, ORBIT_FPS, ORBIT_MAX_SIDE = 48, 12.0, 320
# Captures' surfaces come out soft (several render steps thick, peak opacity per step often < 0.5): the mesh
# is taken where one step has opacity 0.1 (the export default of 0.5 suits sharp synthetic objects).
MESH_RESOLUTION, MESH_OPACITY = 192, 0.1


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit fit", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, FitConfig, positional=("data",), help_text=HELP)
    parser.add_argument("--config", default="", metavar="FILE",
                        help="options from a config.json written by an earlier nfkit fit (DATA may then be omitted); "
                             "flags given here override it")
    for action in parser._actions:  # DATA is optional with --config (checked in fit_config)
        if action.dest == "data":
            action.nargs = "?"
    parser.set_defaults(**{f.name: UNSET for f in dataclasses.fields(FitConfig)})
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--viewer", action="store_true",
                        help="watch the fit in the browser (viser; keeps serving after training until Ctrl-C)")
    from nfkit.apps.viewer import add_viewer_args

    add_viewer_args(parser, prefix="viewer-")
    return parser


def run(ns: argparse.Namespace) -> dict:
    from nfkit.atomic import write_json_atomic
    from nfkit.datasets import load_dataset
    from nfkit.errors import NfkitError, SplitNotFound
    from nfkit.trainer import Trainer

    cfg = fit_config(ns)
    poser = capture_poser(cfg.poses)
    if cfg.steps <= 0:
        raise NfkitError(f"--steps must be positive, got {cfg.steps}")
    from nfkit.datasets.capture import detect_input, prepare_capture

    from nfkit import distributed

    main = distributed.is_main()  # under torchrun only rank 0 poses captures and writes outputs
    out = Path(cfg.out)
    if main:
        (out / "metrics.json").unlink(missing_ok=True)  # a failed run must not leave an earlier run's metrics
    # A video, an image folder or a COLMAP model first becomes DIR/transforms.json (frames + poses);
    # a transforms.json or Blender folder is used as it is.
    timings, t0 = {}, time.perf_counter()
    capture = detect_input(cfg.data)[0] != "transforms"
    data = str(prepare_capture(cfg.data, cfg.out, n_frames=cfg.frames, poser=poser)) if main else None
    data = distributed.broadcast_str(data)
    timings["capture"] = round(time.perf_counter() - t0, 2)
    if not main:
        ns.quiet = True
    if ns.max_seconds is UNSET and ns.steps is UNSET and not getattr(ns, "config", "") and cfg.max_seconds > 0:
        # FitConfig's budget (300 s): with loading, evaluation and (captures) poses and the orbit video, the whole
        # command stays within ~10 minutes on 2 CPU cores, whatever the image size (default --max-side 800).
        print(f"nfkit fit: training for at most {cfg.max_seconds:.0f} s or {cfg.steps} steps "
              "(--max-seconds, --steps to change)")
    train = load_dataset(data, "train", max_side=cfg.max_side, allow_outside_paths=cfg.allow_outside_paths)
    try:
        test = load_dataset(data, "test", max_side=cfg.max_side, allow_outside_paths=cfg.allow_outside_paths)
    except SplitNotFound:  # no held-out views: fit anyway, metrics without PSNR; other errors are errors
        test = None
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, train, test, progress=not ns.quiet)
    if main:  # the resolved options (the family's defaults filled in), for `nfkit fit --config` to run again
        write_json_atomic(out / "config.json", dataclasses.asdict(dataclasses.replace(trainer.cfg, resume=False)))
    sigterm_as_interrupt()  # `kill` then checkpoints like Ctrl-C does
    app = _start_viewer(ns, trainer) if getattr(ns, "viewer", False) and main else None
    try:
        trainer.fit(callback=None if app is None else app.attach(trainer))
        if not main:
            return {}
        timings["train"] = round(trainer.elapsed, 2)
        t1 = time.perf_counter()
        extra = _capture_report(out)
        metrics = trainer.write_outputs(extra)
        timings["evaluate"] = round(time.perf_counter() - t1, 2)
        if capture:
            t1 = time.perf_counter()
            metrics["orbit_video"] = str(_orbit_video(trainer, out, progress=not ns.quiet))
            timings["orbit_video"] = round(time.perf_counter() - t1, 2)
        if capture or trainer.field.kind == "sdf":
            t1 = time.perf_counter()
            mesh = capture_mesh(trainer, out)
            if mesh is not None:
                metrics["mesh"] = mesh
                timings["mesh"] = round(time.perf_counter() - t1, 2)
        metrics["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 2)}
        write_json_atomic(out / "metrics.json", metrics)
    except BaseException:
        if app is not None:
            app.stop()
        raise
    summary = {k: metrics[k] for k in ("psnr", "ssim", "steps", "train_seconds", "samples_per_second", "n_params")}
    print(f"nfkit fit: {json.dumps(summary)}  -> {cfg.out}/metrics.json")
    if app is not None:
        from nfkit.apps.viewer import serve_forever

        app.training_done()
        print(f"nfkit fit: training done; the viewer is still at {app.url} (Ctrl-C to exit)", flush=True)
        serve_forever(app)
    return metrics


def capture_poser(poses: str):
    """The poser :func:`~nfkit.datasets.capture.prepare_capture` uses for ``FitConfig.poses`` (None: its default,
    pycolmap's mapper); NfkitError (one line, exit 2) for an unknown ``--poses``."""
    from nfkit.errors import NfkitError

    if poses not in POSERS:
        raise NfkitError(f"--poses {poses!r}: expected one of {', '.join(POSERS)}")
    if poses == "neural":
        from nfkit.apps.sfm.poser import neural_poser

        return neural_poser
    return None


def fit_config(ns: argparse.Namespace) -> FitConfig:
    """FitConfig from the command line: defaults, then ``--config FILE``'s options, then the flags given."""
    from nfkit.errors import NfkitError
    from nfkit.trainer import load_fit_config

    base = {f.name: getattr(FitConfig(), f.name) for f in dataclasses.fields(FitConfig)}
    if getattr(ns, "config", ""):
        base.update(load_fit_config(ns.config))
    given = {k: v for k, v in vars(ns).items() if k in base and v is not UNSET}
    merged = argparse.Namespace(**{**base, **given})
    check_options("fit", merged)  # the file's values get the command line's checks
    if not merged.data:
        raise NfkitError("nfkit fit: DATA is required (a dataset, capture, or --config FILE of an earlier run)")
    return dataclass_from_args(FitConfig, merged)


def _orbit_video(trainer, out: Path, progress: bool) -> Path:
    """``DIR/orbit.mp4``: around the capture's centre, over the arc the cameras covered (:mod:`nfkit.apps.orbit`)."""
    from nfkit.apps.orbit import write_orbit_video

    return write_orbit_video(trainer.field, trainer.grid, trainer.opts, trainer.train.cameras, out / "orbit.mp4",
                             ORBIT_FRAMES, ORBIT_FPS, ORBIT_MAX_SIDE, progress=progress)


def capture_mesh(trainer, out: Path):
    """The capture's mesh, ``DIR/mesh.ply`` (:mod:`nfkit.export`: marching cubes at :data:`MESH_RESOLUTION`^3
    over the AABB where one render step has opacity :data:`MESH_OPACITY`, vertex colours, largest component,
    input coordinates) -> ``{"vertices", "faces", "path"}``; None, with a note, when scikit-image / trimesh are
    not installed or no surface is found (the fit's other outputs stand)."""
    try:
        import skimage  # noqa: F401
        import trimesh  # noqa: F401

        from nfkit import export
    except ImportError:
        print("nfkit fit: no mesh (needs scikit-image and trimesh: pip install 'nfkit[shapes]')")
        return None
    from nfkit.errors import NfkitError

    try:
        mesh = export.extract_mesh(trainer.field, MESH_RESOLUTION, MESH_OPACITY, trainer.opts.step_size)
        return export.write_mesh(mesh, out / "mesh.ply", trainer.normalization())
    except (NfkitError, ValueError, RuntimeError) as e:  # e.g. no level crossing: an empty field
        print(f"nfkit fit: no mesh ({' '.join(str(e).split())[:120]})")
        return None


def _capture_report(out) -> dict:
    """Frame and pose figures for metrics.json when the input was a video or image folder."""
    p = out / "poses.json"
    if not p.is_file():
        return {}
    rep = json.loads(p.read_text())
    keys = {"frames_total": "n_total", "frames_chosen": "n_chosen", "frames_registered": "n_registered",
            "reprojection_error_px": "mean_reprojection_error_px"}
    return {k: rep[v] for k, v in keys.items() if v in rep}


def _start_viewer(ns: argparse.Namespace, trainer):
    """``--viewer``: the browser viewer on the trainer's live field; renders share the CPU with training."""
    from nfkit.apps.viewer import ViewerApp, check_viewer_args
    from nfkit.apps.viewer_gui import cameras_of

    check_viewer_args(ns.viewer_host, ns.viewer_port, ns.viewer_max_res, ns.viewer_target_fps)
    return ViewerApp(trainer.field, trainer.grid, trainer.opts, ns.viewer_host, ns.viewer_port, ns.viewer_max_res,
                     ns.viewer_target_fps, out_dir=trainer.out, train_cameras=cameras_of(trainer.train),
                     trainer=trainer)


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
