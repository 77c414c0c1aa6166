"""Typed dataclass configs -> argparse, one level deep: each field becomes ``--kebab-name``; and the one check of
every command's parsed options (:func:`check_options`).

The first field named in ``positional`` becomes a positional argument. ``dict`` fields take ``key=value`` pairs.

Numeric options are checked by name, whatever command declares them (:data:`NUMERIC_RULES`): floats must be finite
(``--max-seconds nan`` or ``inf`` is an error, as is ``-1``: 0 is "no limit"), counts and resolutions positive and
below a bound that fits the machine. Output paths must not be a folder where a file is written, nor a file where a
folder is. A bad value is an :class:`~nfkit.errors.NfkitError` naming the flag, so the CLI prints one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from pathlib import Path

from nfkit.errors import NfkitError

# option name -> (lowest, highest) allowed value, inclusive; None: unbounded on that side. Every float option must
# also be finite. Resolutions are bounded by memory on a CPU machine: export's lattice of 1024^3 float32 is 4 GiB.
NUMERIC_RULES: dict[str, tuple[float | None, float | None]] = {
    "steps": (1, 10**9),
    "max_seconds": (0, None),  # 0: no limit
    "checkpoint_seconds": (0, None),
    "samples_per_step": (0, 1 << 26),  # 0: the family's default (fit); convert needs >= 1
    "lr": (0, 10.0),  # 0: the family's default
    "lr_final": (0, 1.0),
    "grid_resolution": (1, 512),
    "n_steps_per_ray": (1, 1 << 16),
    "max_side": (0, 1 << 15),  # 0: full size
    "frames": (3, 10_000),
    "sparsity": (-1, None),  # -1: auto
    "eval_views": (0, None),
    "max_views": (0, None),
    "log2_hashmap_size": (0, 28),  # 0: the family's default
    "eikonal_weight": (0, None),
    "mask_weight": (0, None),
    "curvature_weight": (0, None),
    "anneal_fraction": (0, 1),
    "batch": (1, 1 << 24),
    "samples": (1, 10**8),
    "mc_resolution": (2, 1024),
    "eval_points": (0, 10**8),
    "resolution": (2, 1024),
    "opacity": (1e-6, 1 - 1e-6),
    "views": (1, 10_000),
    "view_size": (1, 8192),
    "max_points": (1, 10**8),
    "port": (1, 65535),
    "viewer_port": (1, 65535),
    "max_res": (32, 4096),
    "viewer_max_res": (32, 4096),
    "target_fps": (0.5, 60),
    "viewer_target_fps": (0.5, 60),
}
# Output paths: folders written into, and files written.
OUTPUT_DIRS = {"fit": ("out",), "fit-image": ("out",), "fit-sdf": ("out",), "eval": ("renders",)}
OUTPUT_FILES = {"render": ("out",), "eval": ("out",), "export": ("mesh", "points"),
                "convert": ("dst", "metrics")}
# Commands that take a folder of field files as a batch job (nfkit.worklist): then their file outputs are folders.
BATCH_INPUTS = {"convert": "src", "export": "field"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_number(name: str, value) -> None:
    """``value`` of option ``name`` against :data:`NUMERIC_RULES` (floats: finite)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise NfkitError(f"{flag(name)} {value}: expected a finite number")
    lo, hi = NUMERIC_RULES.get(name, (None, None))
    if lo is not None and value < lo or hi is not None and value > hi:
        rng = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"between {lo} and {hi}"
        raise NfkitError(f"{flag(name)} {value}: expected a value {rng}")


def check_output_dir(name: str, path) -> None:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NfkitError(f"{flag(name)} {p}: is a file; expected an output folder")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise NfkitError(f"{flag(name)} {p}: {parent} is a file, not a folder")


def check_output_file(name: str, path) -> None:
    p = Path(path)
    if p.is_dir():
        raise NfkitError(f"{flag(name)} {p}: is a folder; expected a file name")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise NfkitError(f"{flag(name)} {p}: {parent} is a file, not a folder")


def check_options(command: str, ns: argparse.Namespace) -> None:
    """Every generic check of one command's parsed options (numbers, output paths); raises NfkitError."""
    for name, value in vars(ns).items():
        check_number(name, value)
    batch = command in BATCH_INPUTS and Path(str(getattr(ns, BATCH_INPUTS[command], "") or "")).is_dir()
    file_check = check_output_dir if batch else check_output_file
    for names, check in ((OUTPUT_DIRS, check_output_dir), (OUTPUT_FILES, file_check)):
        for name in names.get(command, ()):
            value = getattr(ns, name, None)
            if isinstance(value, (str, Path)) and str(value):  # not given: a default or sentinel of the command
                check(name, value)


def _parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise argparse.ArgumentTypeError(f"expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls, positional: tuple[str, ...] = (), help_text=None):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        doc = (help_text or {}).get(f.name, "")
        if f.name in positional:
            parser.add_argument(f.name, type=str, help=doc)
            continue
        flag_ = "--" + f.name.replace("_", "-")
        if typ is bool:
            parser.add_argument(flag_, action=argparse.BooleanOptionalAction, default=default, help=doc)
        elif typ is dict:
            parser.add_argument(flag_, nargs="*", default=[], metavar="KEY=VALUE", help=doc or "config overrides")
        else:
            parser.add_argument(flag_, type=typ, default=default, help=f"{doc} (default: {default})".strip())


def dataclass_from_args(cls, ns: argparse.Namespace):
    """The config ``cls`` from parsed options, each numeric one checked (:func:`check_number`)."""
    kw = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name)
        if isinstance(v, list) and f.type in (dict, "dict"):
            try:
                v = _parse_kv(v)
            except argparse.ArgumentTypeError as e:
                raise NfkitError(f"{flag(f.name)}: {e}") from None
        check_number(f.name, v)
        kw[f.name] = v
    return cls(**kw)


def sub_config(cls, ns: argparse.Namespace):
    """A dataclass from the options of ``ns`` named like its fields (a subcommand that builds several configs)."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    return dataclass_from_args(cls, argparse.Namespace(**values))
