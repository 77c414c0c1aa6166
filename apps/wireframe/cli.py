"""``nfkit wireframe DATA --out DIR [--lines HAWP_DIR | --detector lsd]``: a 3-D wireframe from posed images and
2-D line segments by a neural attraction field (NEAT).

Writes DIR/wireframe.ply (a line set), DIR/wireframe.json (junctions, edges; input coordinates),
DIR/field.safetensors (the VolSDF field, its occupancy grid, the attraction head and the junction latents) and
DIR/metrics.json (with the ABC-protocol scores when a ground-truth lines.json is given or beside the data).
Training checkpoints DIR/checkpoint (every --checkpoint-seconds, on Ctrl-C / kill and at the end); ``--resume``
continues an interrupted run from it.
"""
from __future__ import annotations

import argparse
import json

from nfkit.apps.cli_config import add_dataclass_args, check_output_dir, dataclass_from_args
from nfkit.apps.interrupt import sigterm_as_interrupt

from .config import HELP, WireframeConfig


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = __doc__.splitlines()[0]
    add_dataclass_args(parser, WireframeConfig, positional=("data",), help_text=HELP)
    return parser


def run(ns) -> None:
    from .pipeline import run_wireframe

    cfg = dataclass_from_args(WireframeConfig, ns)
    check_output_dir("out", cfg.out)
    sigterm_as_interrupt()  # `kill` then checkpoints like Ctrl-C does (continue with --resume)
    m = run_wireframe(cfg)
    ev = m.get("evaluation")
    summary = {"junctions": m["junctions"], "edges": m["edges"], "train_seconds": m["train_seconds"]}
    if ev:
        summary["junction_f1_5%"] = ev["junctions"]["5%"]["f1"]
        summary["line_f1_5%"] = ev["lines"]["5%"]["f1"]
    print(json.dumps(summary))

