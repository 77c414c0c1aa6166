"""Outputs of ``nfkit sfm``: a COLMAP model (``DIR/sparse/0``, binary, re-readable by pycolmap), ``transforms.json``
(nerfstudio, what ``nfkit fit`` reads; the images copied to ``DIR/images``), ``report.json``, ``config.json`` and the
SDF field file ``DIR/sdf.safetensors`` (``nfkit view`` / ``nfkit export``)."""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nfkit.atomic import write_json_atomic
from nfkit.datasets.colmap import colmap_to_transforms, import_pycolmap


def to_reconstruction(state, matches, point_ids: dict | None = None, one_focal: bool = False):
    """The state as a ``pycolmap.Reconstruction`` (one PINHOLE camera, id 1 -- SIMPLE_PINHOLE with f = sqrt(fx fy)
    when ``one_focal``; registered image i as image i + 1 with all its keypoints; live points with their tracks).
    point_ids: filled with {point id: point3D id}."""
    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    K = state.K
    w, h = matches.sizes[0]
    if one_focal:
        cam = pycolmap.Camera(model="SIMPLE_PINHOLE", width=int(w), height=int(h),
                              params=[float(np.sqrt(K[0, 0] * K[1, 1])), K[0, 2], K[1, 2]], camera_id=1)
    else:
        cam = pycolmap.Camera(model="PINHOLE", width=int(w), height=int(h),
                              params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    for i in sorted(state.poses):
        R, t = state.poses[i]
        im = pycolmap.Image(name=matches.names[i], keypoints=np.asarray(matches.keypoints[i], np.float64),
                            camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(im, pycolmap.Rigid3d(np.hstack([R, t[:, None]])))
    for pid in state.live_ids():
        track = pycolmap.Track()
        for img, kp in state.tracks[pid].items():
            if img in state.poses:
                track.add_element(img + 1, int(kp))
        if track.length() >= 2:
            p3d = rec.add_point3D(state.points[pid], track, np.array([200, 200, 200], np.uint8))
            if point_ids is not None:
                point_ids[int(pid)] = int(p3d)
    return rec


def write_model(rec, out) -> Path:
    """``rec`` (pycolmap.Reconstruction) -> ``out/sparse/0``, written beside it then renamed into place (no
    half-written model looks complete). Returns the model folder."""
    model = Path(out) / "sparse" / "0"
    tmp = Path(out) / "sparse" / ".0.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rec.write(str(tmp))
    shutil.rmtree(model, ignore_errors=True)
    tmp.rename(model)
    return model


def write_outputs(result, matches, cfg, out) -> dict:
    """Writes every output into ``out``; returns the report (with the paths)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = to_reconstruction(result.state, matches)
    model = write_model(rec, out)
    img_dir = out / "images"
    img_dir.mkdir(exist_ok=True)
    for i in result.state.poses:
        src = Path(matches.image_dir) / matches.names[i]
        if not (img_dir / matches.names[i]).exists():
            shutil.copy2(src, img_dir / matches.names[i])
    colmap_to_transforms(rec, out / "transforms.json", img_dir)
    report = dict(result.report)
    report["files"] = {"model": str(model), "transforms": str(out / "transforms.json")}
    if result.field is not None:
        from nfkit.fields.io import save

        save(result.field, out / "sdf.safetensors", info={"origin": "nfkit sfm (world of the COLMAP model)"})
        report["files"]["sdf"] = str(out / "sdf.safetensors")
    write_json_atomic(out / "config.json", asdict(cfg))
    write_json_atomic(out / "report.json", report)
    return report
