"""The incremental loop: init -> SDF fit -> (register -> triangulate -> local BA [-> global BA])* -> final BA
-> tracks re-attached + wide-scale LM BA -> pycolmap LM BA (``final_lm_ba``) -> per-pose polish.

View order: next-best-view = the unregistered view with the most 2D–3D correspondences; a view that cannot be
registered now is retried after the next success, and reported as skipped (with the reason) if it never
registers: one failed view does not end the run (upstream aborts).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field, replace

import numpy as np
import torch

from nfkit.progress import progress_bar

from .bundle import bundle_adjust
from .init import initialise
from .refine import lm_bundle_adjust, reattach_tracks
from .register import correspondences, polish_poses, register_view
from .surface import fit_sdf, make_field
from .tracks import feature_tracks
from .triangulate import triangulate_view


@dataclass
class SfmResult:
    state: object
    field: object
    report: dict = dc_field(default_factory=dict)


def _uses_sdf(cfg) -> bool:
    return cfg.neural_triangulation or cfg.neural_ba or cfg.surface_filter


def _neighbours(state, matches, new: int, k: int = 4) -> list:
    others = sorted((j for j in state.poses if j != new), key=lambda j: -len(matches.pair(new, j)))
    return [new] + others[:k]


class _Timer:
    def __init__(self):
        self.seconds = {}

    def add(self, name, t0):
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _register_next(state, matches, cfg, todo, filter_field, failures):
    """Registers the first view that works, best-connected first -> (view, stats) or None (reasons in failures).

    When every view fails, the registered views' tracks without a point are triangulated by DLT (COLMAP's
    retriangulation; ``stats["retriangulated"]``) and every view is tried once more, without the surface filter
    (the SDF may not cover the part of the scene the next views see yet; ``stats["surface_filter"] =
    "relaxed"``).  (Relaxing the filter alone registered the temple ring's weakest view on 13 inliers, and the
    chain bent: 16/16 at 2-3 degrees.)"""
    attempts = [(filter_field, False)] if filter_field is not None else [(None, False)]
    attempts += [(None, True)]
    for fld, retriangulate in attempts:
        if retriangulate:  # DLT points for the registered views' tracks that have none yet (COLMAP's retriangulation)
            classic = replace(cfg, neural_triangulation=False)
            n_new = sum(triangulate_view(state, matches, v, classic, None)["new_points"] for v in list(state.poses))
        ranked = sorted(todo, key=lambda i: -len(correspondences(state, matches, i)[0]))
        for i in ranked:
            ok, reason, stats = register_view(state, matches, i, cfg, fld)
            if ok:
                if fld is None and filter_field is not None:
                    stats["surface_filter"] = "relaxed"
                if retriangulate:
                    stats["retriangulated"] = int(n_new)
                return i, stats
            failures[i] = reason
    return None


def _finish(state, matches, cfg, ba_field, focal, timer) -> dict:
    """The final global BA (neural or classic), then pycolmap's LM BA and per-pose polish -> their reports."""
    t0 = time.perf_counter()
    final = bundle_adjust(state, matches, cfg, steps=cfg.final_ba_steps, field=ba_field, focal=focal)
    state.filter_observations(matches.keypoints, cfg.max_reproj)
    timer.add("bundle", t0)
    if cfg.final_lm_ba:
        t0 = time.perf_counter()
        if cfg.reattach_scale > 0:  # the tracks' lost observations back, one wide-scale solve, filter, then 1 px
            final["reattached"] = reattach_tracks(state, matches)
            final["lm_wide"] = lm_bundle_adjust(state, matches, focal is not None, cfg.reattach_scale)
            state.filter_observations(matches.keypoints, cfg.max_reproj)
        final["lm"] = lm_bundle_adjust(state, matches, focal is not None)
        state.filter_observations(matches.keypoints, cfg.max_reproj)
        timer.add("lm_bundle", t0)
    if cfg.polish_poses:
        t0 = time.perf_counter()
        final["polish"] = polish_poses(state, matches, cfg)
        timer.add("polish", t0)
    return final


def run_sfm(matches, cfg, show_progress: bool = True) -> SfmResult:
    """Runs nfkit sfm on :class:`~.matches.Matches` with :class:`~.config.SfmConfig` -> :class:`SfmResult`."""
    torch.manual_seed(cfg.seed)
    timer = _Timer()
    t0 = time.perf_counter()
    state, seeds, _ = initialise(matches, cfg)
    timer.add("init", t0)
    field = None
    t0 = time.perf_counter()
    if _uses_sdf(cfg):
        field = make_field(state.centre, cfg)
        c0 = -state.poses[state.order[0]][0].T @ state.poses[state.order[0]][1]
        fit_sdf(field, np.zeros((0, 3)), cfg.init_steps, cfg.lr_sdf, seeds=seeds, seed=cfg.seed,
                centres=np.broadcast_to(c0, seeds.shape))
    timer.add("sdf_init", t0)
    focal = None
    if not matches.known_intrinsics and cfg.refine_focal:
        focal = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    ba_field = field if cfg.neural_ba else None
    tri_field = field if cfg.neural_triangulation else None
    t0 = time.perf_counter()
    log = [{"view": matches.names[state.order[1]], **triangulate_view(state, matches, state.order[1], cfg, tri_field)}]
    timer.add("triangulate", t0)
    t0 = time.perf_counter()
    bundle_adjust(state, matches, cfg, steps=cfg.ba_steps, field=ba_field, focal=focal)
    state.filter_observations(matches.keypoints, cfg.max_reproj)
    timer.add("bundle", t0)
    failures = {}
    bar = progress_bar(total=matches.n_images, initial=2, desc="nfkit sfm", unit="view", disable=not show_progress)
    while True:
        todo = [i for i in range(matches.n_images) if i not in state.poses]
        if not todo:
            break
        t0 = time.perf_counter()
        done = _register_next(state, matches, cfg, todo, field if cfg.surface_filter else None, failures)
        timer.add("register", t0)
        if done is None:
            break
        new, stats = done
        failures.pop(new, None)
        state.order.append(new)
        t0 = time.perf_counter()
        tri = triangulate_view(state, matches, new, cfg, tri_field)
        timer.add("triangulate", t0)
        t0 = time.perf_counter()
        bundle_adjust(state, matches, cfg, images=_neighbours(state, matches, new), steps=cfg.ba_steps,
                      field=ba_field, focal=focal)
        if len(state.order) % cfg.global_every == 0:
            bundle_adjust(state, matches, cfg, steps=cfg.global_ba_steps, field=ba_field, focal=focal)
        state.filter_observations(matches.keypoints, cfg.max_reproj)
        timer.add("bundle", t0)
        log.append({"view": matches.names[new], **stats, **tri})
        bar.update(1)
    bar.close()
    final = _finish(state, matches, cfg, ba_field, focal, timer)
    state.skipped = {i: failures.get(i, "not reached") for i in range(matches.n_images) if i not in state.poses}
    report = {
        "registered": len(state.poses), "total": matches.n_images,
        "mean_reprojection_error_px": state.mean_reprojection_error(matches.keypoints),
        "n_points": int(len(state.live_ids())),
        "order": [matches.names[i] for i in state.order],
        "skipped": [{"image": matches.names[i], "reason": r} for i, r in sorted(state.skipped.items())],
        "seconds_per_stage": {k: round(v, 2) for k, v in timer.seconds.items()},
        "final_ba": final, "views": log,
        "focal_px": [float(state.K[0, 0]), float(state.K[1, 1])],
        "tracks": feature_tracks(matches).stats(),
    }
    return SfmResult(state, field, report)
