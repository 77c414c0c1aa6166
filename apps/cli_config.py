"""Typed dataclass configs -> argparse, one level deep: each field becomes ``--kebab-name``.

The first field named in ``positional`` becomes a positional argument. ``dict`` fields take ``key=value`` pairs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing


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
        flag = "--" + f.name.replace("_", "-")
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=doc)
        elif typ is dict:
            parser.add_argument(flag, nargs="*", default=[], metavar="KEY=VALUE", help=doc or "config overrides")
        else:
            parser.add_argument(flag, type=typ, default=default, help=f"{doc} (default: {default})".strip())


def dataclass_from_args(cls, ns: argparse.Namespace):
    kw = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name)
        if isinstance(v, list) and f.type in (dict, "dict"):
            v = _parse_kv(v)
        kw[f.name] = v
    return cls(**kw)
