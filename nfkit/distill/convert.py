"""``nfkit convert``'s library half: teacher file -> student field file + metrics, by PVD (:mod:`nfkit.distill.pvd`).

Student configuration: the family's defaults for ``signal="radiance"`` with the common colour head
(``color_head="mlp"``: an MLP over [SH_4(d), 15 features], the hash grid's shape; the rbf family's own default is an
SH head) and :data:`CONVERT_DEFAULTS` (wider mlp / cam trunks than ``nfkit fit``'s), then the user's config
(``--config student.json``) on top; a hash-grid student sizes its finest level from the images when ``--data`` is
given (as ``nfkit fit``). The student keeps the teacher's AABB, normalisation, occupancy grid (the samples were
drawn inside it), background model and camera range (:func:`~nfkit.renderers.camera_range.field_prior`).

Same family and no user config: an **exact copy** (the file's tensors and metadata unchanged; metrics say
``"mode": "copy"``). Same family with a config: distilled into the new configuration (e.g. a smaller hash table).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from nfkit import fields
from nfkit.atomic import write_json_atomic
from nfkit.distill.pvd import DistillConfig, Distiller
from nfkit.renderers.camera_range import field_prior, prior_to_dict, virtual_cameras
from nfkit.errors import FieldFileError, NfkitError, SplitNotFound

RADIANCE_FAMILIES = ("mlp", "cam", "rbf", "triplane", "hashgrid")
WHITE = torch.ones(3)


# Conversion defaults on top of a family's own radiance defaults. A student must hold what the teacher holds: the
# 18k-parameter mlp that ``nfkit fit`` trains by default tops out near 27.5 dB on lego/100 as a student of a 30.3 dB
# hash grid (150 s); a 256 x 3 trunk with 8 octaves (~155k parameters) reaches 29.8-30.0 dB in 180-220 s.
CONVERT_DEFAULTS = {
    "mlp": {"hidden": 256, "n_layers": 3, "n_freqs": 8},
    "cam": {"hidden": 256, "n_layers": 3, "n_freqs": 8},
}


def student_config(family: str, user: dict | None = None, image_side: int = 0) -> dict:
    """Config dict of a student of ``family`` (see the module docstring)."""
    if family not in fields.families():
        raise NfkitError(f"--to: unknown field family {family!r}; known: {', '.join(RADIANCE_FAMILIES)}")
    cfg: dict = {}
    if family != "hashgrid":
        cfg = {"signal": "radiance", "color_head": "mlp", **CONVERT_DEFAULTS.get(family, {})}
    elif image_side:
        from nfkit.trainer import FitConfig, field_overrides

        cfg = field_overrides(FitConfig(field="hashgrid"), image_side)
    cfg.update(user or {})
    return cfg


def load_teacher(path, device: str = "cpu", centres: torch.Tensor | None = None):
    """(field, grid, opts, meta) of a radiance field file; a file without an occupancy grid gets one estimated
    from the field's density (for a field whose density depends on the view, as the trainer's grid: the density
    seen from a random one of ``centres`` [C, 3], the training cameras, else of virtual cameras in the range stored
    in the file)."""
    from nfkit.renderers import load_renderable
    from nfkit.renderers.view_density import camera_density_fn, stored_view_centres, view_dependent

    field, grid, opts, meta = load_renderable(path, device)
    if field.kind != "density":
        raise FieldFileError(f"{path}: a {field.kind} field ({meta['family']}); convert needs a radiance field "
                             "(fitted by `nfkit fit`)")
    if float(grid.density.abs().sum()) == 0.0:  # no saved grid: estimate it (every cell, a few jitters)
        if view_dependent(field) and centres is None:
            centres = stored_view_centres(field, meta, str(path))
        density = camera_density_fn(field, centres)  # each point seen from a random one: as the trainer's grid
        with torch.no_grad():
            for _ in range(4):
                grid.update(0, density, opts.step_size)
    return field, grid, opts, meta


def render_views(field, grid, opts, cams, n: int) -> list[torch.Tensor]:
    """The first ``n`` views of ``cams`` rendered on white: list of [H, W, 3]."""
    from nfkit.renderers.background import render_image_bg

    field.eval()
    return [render_image_bg(field, grid, cams, i, opts, WHITE)["rgb"].clamp(0, 1) for i in range(min(n, len(cams)))]


def psnr_between(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    from nfkit.metrics import psnr

    return sum(psnr(x, y) for x, y in zip(a, b)) / max(1, len(a))


def _load_data(data):
    from nfkit.datasets import load_dataset

    if data is None:
        return None, None
    train = load_dataset(data, "train")
    try:
        test = load_dataset(data, "test")
    except SplitNotFound:
        test = None
    return train, test


def convert_file(src, dst, family: str, cfg: DistillConfig, user_config: dict | None = None, data=None,
                 eval_views: int = 8, progress: bool = True, callback=None, metrics_path=None) -> dict:
    """Convert the field file ``src`` into a ``family`` field at ``dst``; writes ``metrics_path`` (default
    ``dst``'s folder / metrics.json) and returns the metrics. ``callback(distiller)`` runs after each step."""
    src, dst = Path(src), Path(dst)
    header = fields.read_header(src)  # version / format checks first, with the file's name
    metrics_path = Path(metrics_path) if metrics_path else dst.parent / "metrics.json"
    if dst.resolve() == src.resolve():
        raise NfkitError(f"{dst}: output would overwrite the input field file")
    if family not in RADIANCE_FAMILIES:
        raise NfkitError(f"--to: expected one of {', '.join(RADIANCE_FAMILIES)}, got {family!r}")
    train, test = _load_data(data)
    t_start = time.perf_counter()
    if header["family"] == family and not user_config:
        teacher, grid, opts, meta = load_teacher(src)  # validates the whole file, not just the header
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        metrics = {"mode": "copy", "from": header["family"], "to": family, "field": str(dst),
                   "note": "same family without --config: exact copy of the field file"}
        if test is not None:
            from nfkit.evaluation import evaluate

            metrics["psnr_vs_ground_truth"] = evaluate(teacher, grid, test, opts)["psnr"]
        write_json_atomic(metrics_path, metrics)
        return metrics
    teacher, grid, opts, meta = load_teacher(src, centres=None if train is None else train.cameras.c2w[:, :3, 3])
    side = max(train.images.shape[1:3]) if train is not None else 0
    try:
        student = fields.build_field(family, student_config(family, user_config, side), teacher.aabb.cpu())
    except (TypeError, ValueError) as e:
        raise NfkitError(f"--config: does not build a {family} field ({' '.join(str(e).split())[:160]})") from None
    # Virtual cameras where the teacher was trained from: the data's cameras, else the file's stored range.
    prior, prior_source = field_prior(teacher.aabb, meta, str(src), None if train is None else train.cameras)
    dist = Distiller(teacher, grid, opts, student, cfg, prior, progress=progress)
    dist.fit(callback)
    student.eval()
    fields.save(student, dst, normalization=meta.get("normalization"),
                info={"converted_from": str(src), "teacher_family": header["family"], "distill_steps": dist.step,
                      "distill_seconds": dist.elapsed,
                      **({"camera_prior": prior_to_dict(prior)} if prior_source != "sphere" else {})},
                extra_tensors={f"occgrid.{k}": v for k, v in grid.state_dict().items()})
    metrics = {"mode": "distill", "from": header["family"], "to": family, "field": str(dst), "steps": dist.step,
               "train_seconds": round(dist.elapsed, 2),
               "stage_seconds": {f"stage{k}": round(v, 2) for k, v in dist.stage_seconds.items()},
               "head_copied": dist.head_copied, "cameras_from": prior_source,
               "n_params": sum(p.numel() for p in student.parameters()),
               "student_config": student.config_dict(),
               "loss_first": dist.history[0]["loss"] if dist.history else None,
               "loss_last": dist.history[-1]["loss"] if dist.history else None}
    metrics.update(evaluate_student(teacher, student, grid, opts, prior, test, eval_views))
    metrics["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    write_json_atomic(metrics_path, metrics)
    return metrics


@torch.no_grad()
def evaluate_student(teacher, student, grid, opts, prior, test=None, eval_views: int = 8) -> dict:
    """PSNR of the student against the teacher's renders (the test cameras when given, else fixed virtual views
    at 100 px), and of both against ground truth on the test views (white background)."""
    from nfkit.evaluation import evaluate

    gen = torch.Generator().manual_seed(1234)
    cams = test.cameras if test is not None else virtual_cameras(prior, eval_views, 100, gen)
    out = {"psnr_vs_teacher": psnr_between(render_views(student, grid, opts, cams, eval_views),
                                           render_views(teacher, grid, opts, cams, eval_views)),
           "eval_views": min(eval_views, len(cams))}
    if test is not None:
        out["psnr_vs_ground_truth"] = evaluate(student, grid, test, opts)["psnr"]
        out["teacher_psnr_vs_ground_truth"] = evaluate(teacher, grid, test, opts)["psnr"]
    return out
