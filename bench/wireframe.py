"""Benchmark (issue 21): NEAT 3-D wireframes (``nfkit wireframe``) against the ABC ground truth and on real photos.

    python bench/wireframe.py [--parts abc-hawp,abc-lsd,temple] [--steps 3000] [--max-side 128]
                              [--temple-max-side 128]

* ``abc-hawp``: ../shared/data/abc_wireframe (100 views, HAWP 2-D wireframes with score > 0.05): NEAT trained once,
  then extracted with Global Junction Perceiving and without it (ablation: junctions by clustering the rendered
  endpoints), both also without the vote-ratio filter (``min_vote_ratio`` 0: an edge needs votes from a quarter of
  the views that see it, :mod:`nfkit.apps.wireframe.visibility`), and once more with GJP junctions not snapped onto
  the surface (a diagnostic: the small SDF's rounded corners pull snapped corner junctions inwards); the classic
  baseline (``nfkit.apps.wireframe.classic``: epipolar matching + triangulation + merging) on the same 2-D segments
  and cameras. ABC protocol (one-to-one Hungarian matching; precision / recall / F1 at
  1, 2, 5 % of the object's largest side). Goals: junction F1 >= 0.9 and line F1 >= 0.85 at 5 %; NEAT above the
  classic baseline on line F1 at 2 % and 5 %; GJP's precision above the ablation's.
* ``abc-lsd``: the same with LSD segments (OpenCV; junctions by clustering endpoints) instead of HAWP.
* ``temple``: ../shared/data/temple_ring (16 real photos, calibrated): LSD segments, the reader's split (13 views
  to train, 3 held out); on the held-out views at full resolution (LSD there too): the share of reprojected 3-D
  segments with a detected segment within 3 px and 5 deg, and the share of detected segments >= 40 px explained;
  NEAT (with and without the vote-ratio filter) and the classic baseline side by side.

Budgets are training steps (times depend on the machine's load; the issue's goal is <= 10 min a scene on 2
cores). Prints a table, then one JSON line (machine, date, settings, rows).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nfkit.apps.wireframe.classic import classic_wireframe
from nfkit.apps.wireframe.config import WireframeConfig
from nfkit.apps.wireframe.evaluate import reprojection_scores
from nfkit.apps.wireframe.extract import extract_wireframe
from nfkit.apps.wireframe.lines2d import lsd_lines
from nfkit.apps.wireframe.pipeline import load_inputs, score, to_input, train_model
from nfkit.datasets import load_dataset
from nfkit.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
PARTS = ("abc-hawp", "abc-lsd", "temple")


def _row(name, method, ev=None, extra=None) -> dict:
    r = {"scene": name, "method": method, **(extra or {})}
    if ev:
        for kind in ("junctions", "lines"):
            for t, v in ev[kind].items():
                for k in ("precision", "recall", "f1"):
                    r[f"{kind[0]}_{k[0]}@{t}"] = v[k]
        r["n_j"], r["n_l"] = ev["n_pred_junctions"], ev["n_pred_lines"]
    return r


def abc(detector: str, args) -> list[dict]:
    data = SHARED / "abc_wireframe"
    if not data.is_dir():
        return [{"scene": f"abc-{detector}", "method": "-", "error": f"{data} absent"}]
    cfg = WireframeConfig(data=str(data), detector=detector, steps=args.steps, max_side=args.max_side,
                          progress=False)
    name = f"abc-{detector}"
    t0 = time.perf_counter()
    train, lines, _ = load_inputs(cfg, log=lambda m: print(m, file=sys.stderr))
    t_load = time.perf_counter() - t0
    model = train_model(train, lines, cfg)
    rows = []
    no_ratio = replace(cfg, min_vote_ratio=0.0)
    variants = (("neat", cfg, True), ("neat-no-gjp", cfg, False),
                ("neat-no-vote-ratio", no_ratio, True), ("neat-no-gjp-no-vote-ratio", no_ratio, False),
                ("neat-gjp-unsnapped", replace(cfg, snap_steps=0, snap_tol=4 * cfg.snap_tol), True))
    for method, c, gjp in variants:
        t1 = time.perf_counter()
        wf, stats = extract_wireframe(model.field, model.head, model.junctions, model.grid, model.opts, train,
                                      lines, c, use_gjp=gjp)
        ev = score(c, train, to_input(train, wf), wf.edges)
        secs = {"train_s": round(model.seconds, 1), "extract_s": round(time.perf_counter() - t1, 1),
                "total_s": round(t_load + model.seconds + time.perf_counter() - t1, 1)}
        rows.append(_row(name, method, ev, {**secs, "steps": model.steps}))
    t1 = time.perf_counter()
    wf, stats = classic_wireframe(train, lines)
    ev = score(cfg, train, to_input(train, wf), wf.edges)
    rows.append(_row(name, "classic", ev, {"total_s": round(t_load + time.perf_counter() - t1, 1)}))
    return rows


def temple(args) -> list[dict]:
    data = SHARED / "temple_ring"
    if not data.is_dir():
        return [{"scene": "temple", "method": "-", "error": f"{data} absent"}]
    cfg = WireframeConfig(data=str(data), detector="lsd", split="train", steps=args.steps,
                          max_side=args.temple_max_side, progress=False)
    t0 = time.perf_counter()
    train, lines, _ = load_inputs(cfg, log=lambda m: print(m, file=sys.stderr))
    t_load = time.perf_counter() - t0
    test = load_dataset(data, split="test", max_side=0)
    test_lines = [lsd_lines(im.numpy()) for im in test.images]
    model = train_model(train, lines, cfg)
    rows = []
    for method, c in (("neat", cfg), ("neat-no-vote-ratio", replace(cfg, min_vote_ratio=0.0))):
        t1 = time.perf_counter()
        wf, stats = extract_wireframe(model.field, model.head, model.junctions, model.grid, model.opts, train, lines,
                                      c)
        neat = reprojection_scores(wf.junctions[wf.edges].reshape(-1, 2, 3), test.cameras, test_lines)
        rows.append({"scene": "temple", "method": method, **neat, "n_l": len(wf.edges),
                     "train_s": round(model.seconds, 1), "steps": model.steps,
                     "total_s": round(t_load + model.seconds + time.perf_counter() - t1, 1)})
    t1 = time.perf_counter()
    cwf, _ = classic_wireframe(train, lines)
    cl = reprojection_scores(cwf.junctions[cwf.edges].reshape(-1, 2, 3), test.cameras, test_lines)
    rows.append({"scene": "temple", "method": "classic", **cl, "n_l": len(cwf.edges),
                 "total_s": round(t_load + time.perf_counter() - t1, 1)})
    return rows


def table(rows: list[dict]) -> str:
    cols = ["scene", "method", "j_f@1%", "j_f@2%", "j_f@5%", "l_f@1%", "l_f@2%", "l_f@5%", "j_p@5%", "l_p@5%",
            "n_j", "n_l", "reprojected_matched", "detected_explained", "total_s", "error"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = [" | ".join(cols)]
    for r in rows:
        lines.append(" | ".join(str(r.get(c, "")) for c in cols))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--steps", type=int, default=WireframeConfig.steps)
    ap.add_argument("--max-side", type=int, default=WireframeConfig.max_side)
    ap.add_argument("--temple-max-side", type=int, default=WireframeConfig.max_side)
    args = ap.parse_args(argv)
    rows = []
    for part in args.parts.split(","):
        try:
            if part == "abc-hawp":
                rows += abc("hawp", args)
            elif part == "abc-lsd":
                rows += abc("lsd", args)
            elif part == "temple":
                rows += temple(args)
            else:
                rows.append({"scene": part, "method": "-", "error": f"unknown part (expected {', '.join(PARTS)})"})
        except Exception as e:  # noqa: BLE001  (one failed part is a row; the others still run)
            traceback.print_exc()
            rows.append({"scene": part, "method": "-", "error": f"{type(e).__name__}: {str(e)[:160]}"})
        print(table(rows), file=sys.stderr, flush=True)
    print(table(rows))
    print(json.dumps({"bench": "wireframe", "machine": cpu_model(), "threads": torch.get_num_threads(),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "settings": vars(args), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
