"""``nfkit fit DATA --out DIR``: fit a field to a posed capture and write metrics, the field file and renders.

Runnable as ``python apps/fit_scene.py DATA --out DIR`` with the same arguments as ``nfkit fit``.
"""
from __future__ import annotations

import argparse
import json
import sys

from nfkit.apps.cli_config import add_dataclass_args, dataclass_from_args
from nfkit.trainer import FitConfig

HELP = {
    "data": "dataset: a Blender folder (transforms_train.json ...) or a nerfstudio/instant-ngp transforms.json",
    "out": "output folder (metrics.json, field.safetensors, renders/, checkpoint/)",
    "field": "field family",
    "steps": "training steps",
    "max_seconds": "stop after this many seconds of training (0: no limit)",
    "resume": "continue from DIR/checkpoint",
    "field_options": "field config overrides, e.g. hidden=32",
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit fit", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, FitConfig, positional=("data",), help_text=HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--viewer", action="store_true",
                        help="watch the fit in the browser (viser; keeps serving after training until Ctrl-C)")
    from nfkit.apps.viewer import add_viewer_args

    add_viewer_args(parser, prefix="viewer-")
    return parser


def run(ns: argparse.Namespace) -> dict:
    from nfkit.datasets import load_dataset
    from nfkit.errors import NfkitError, SplitNotFound
    from nfkit.trainer import Trainer

    cfg = dataclass_from_args(FitConfig, ns)
    if cfg.steps <= 0:
        raise NfkitError(f"--steps must be positive, got {cfg.steps}")
    from nfkit.datasets.capture import prepare_capture

    # A video, an image folder or a COLMAP model first becomes DIR/transforms.json (frames + poses);
    # a transforms.json or Blender folder is used as it is.
    data = prepare_capture(cfg.data, cfg.out, n_frames=cfg.frames)
    train = load_dataset(data, "train", max_side=cfg.max_side or None)
    try:
        test = load_dataset(data, "test", max_side=cfg.max_side or None)
    except SplitNotFound:  # no held-out views: fit anyway, metrics without PSNR; other errors are errors
        test = None
    from pathlib import Path

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, train, test, progress=not ns.quiet)
    _sigterm_as_interrupt()  # `kill` then checkpoints like Ctrl-C does
    app = _start_viewer(ns, trainer) if getattr(ns, "viewer", False) else None
    try:
        trainer.fit(callback=None if app is None else app.attach(trainer))
        metrics = trainer.write_outputs(_capture_report(Path(cfg.out)))
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


def _sigterm_as_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
