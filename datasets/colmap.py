"""Camera poses with COLMAP (pycolmap), and COLMAP models -> nerfstudio ``transforms.json``.

:func:`run_colmap`: SIFT features, sequential matching (images in name order = time order; loop detection
off, it needs a vocabulary tree) or exhaustive matching, incremental mapping with one camera shared by all
images (OPENCV).  When fewer than ``min_fraction`` of the images register, it retries: exhaustive matching
added, then a SIMPLE_RADIAL camera, then relaxed registration thresholds (:func:`_plan`).  The model with the
most registered images wins.

:func:`colmap_to_transforms`: writes the nerfstudio json, as nerfstudio's ``colmap_to_json`` does:

* COLMAP stores ``cam_from_world`` (world -> camera, OpenCV axes: +X right, +Y down, +Z forward);
  ``c2w = inv(w2c)``, then columns 1 and 2 are negated (OpenCV -> OpenGL camera axes);
* the world is re-oriented by ``A = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]`` (rows permuted [0, 2, 1], the new z
  row negated: COLMAP's usual "y down" becomes "z up"): ``c2w_saved = [[A, 0], [0, 1]] @ c2w``, and ``A`` is
  recorded as ``applied_transform`` ([3, 4], COLMAP world -> saved world); the sparse points are mapped by it
  too;
* intrinsics in pixels; COLMAP and nerfstudio both put pixel centres at +0.5, so ``cx``, ``cy`` carry over.

The sparse points go to a binary PLY (``ply_file_path``, float32 x y z + uint8 rgb) and their 5th-95th
percentile box to ``nfkit_points_bounds`` ([[min x, y, z], [max x, y, z]], saved coordinates).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nfkit.errors import NfkitError

# COLMAP world -> saved world (nerfstudio's applied_transform): x' = x, y' = z, z' = -y.
APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
# camera model -> names of its parameters (COLMAP order); others are rejected.
CAMERA_PARAMS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}
MODEL_FILES = ("cameras", "images", "points3D")


def import_pycolmap():
    """pycolmap, or NfkitError with the install command."""
    try:
        import pycolmap
    except ImportError as e:
        raise NfkitError("camera poses need pycolmap: pip install pycolmap==4.2.1 "
                         "(or pip install 'nfkit[capture]')") from e
    return pycolmap


def is_colmap_model_dir(path) -> bool:
    """True when ``path`` holds cameras, images and points3D as ``.bin`` (or all as ``.txt``)."""
    p = Path(os.fspath(path))
    return any(all((p / f"{n}{ext}").is_file() for n in MODEL_FILES) for ext in (".bin", ".txt"))


@dataclass
class PoseResult:
    """Outcome of :func:`run_colmap`.

    reconstruction: the chosen ``pycolmap.Reconstruction`` (None when no model could be built).
    n_images: images given; n_registered: images with a pose in the chosen model.
    mean_reprojection_error: pixels (NaN without a model).  matcher: "sequential" or "sequential+exhaustive"
    (or "exhaustive") and camera_model: those of the chosen run.  attempts: one dict per mapping run
    (matcher, camera model, relaxed, registered, error, seconds).
    """

    reconstruction: object
    n_images: int
    n_registered: int
    mean_reprojection_error: float
    n_points: int
    matcher: str
    attempts: list = field(default_factory=list)
    seconds: float = 0.0
    camera_model: str = ""

    @property
    def registered_fraction(self) -> float:
        return self.n_registered / self.n_images if self.n_images else 0.0

    def summary(self) -> dict:
        """JSON-ready numbers (no model)."""
        return {"n_images": self.n_images, "n_registered": self.n_registered,
                "registered_fraction": round(self.registered_fraction, 4),
                "mean_reprojection_error_px": None if np.isnan(self.mean_reprojection_error)
                else round(float(self.mean_reprojection_error), 4),
                "n_points": self.n_points, "matcher": self.matcher, "camera_model": self.camera_model,
                "attempts": self.attempts,
                "seconds": round(self.seconds, 2)}


def _quiet_logs(pycolmap, verbose: bool) -> None:
    try:
        pycolmap.logging.minloglevel = 0 if verbose else 2  # glog: 0 INFO, 1 WARNING, 2 ERROR
    except Exception:  # logging controls differ across pycolmap builds; noise is harmless
        pass


def _map(pycolmap, db: Path, image_dir: Path, out: Path, refine_intrinsics: bool, relaxed: bool):
    """One incremental mapping run -> the model with the most registered images (or None).

    relaxed: accept a new image's pose with 15 inliers / 10 % inlier ratio (COLMAP default 30 / 25 %).
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.min_model_size = 3
    opts.ba_refine_focal_length = opts.ba_refine_extra_params = refine_intrinsics
    opts.mapper.abs_pose_refine_focal_length = opts.mapper.abs_pose_refine_extra_params = refine_intrinsics
    opts.random_seed = opts.mapper.random_seed = 0
    if relaxed:
        opts.mapper.abs_pose_min_num_inliers, opts.mapper.abs_pose_min_inlier_ratio = 15, 0.1
    models = pycolmap.incremental_mapping(str(db), str(image_dir), str(out), opts)
    if not models:
        return None
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def _set_camera_model(pycolmap, db: Path, model: str) -> None:
    """Switches the database's cameras to ``model`` (focal kept, principal point at the centre)."""
    with pycolmap.Database.open(str(db)) as database:
        for cam in database.read_all_cameras():
            if cam.model_name != model:
                new = pycolmap.Camera.create_from_model_name(cam.camera_id, model, float(cam.mean_focal_length()),
                                                             cam.width, cam.height)
                new.has_prior_focal_length = cam.has_prior_focal_length
                database.update_camera(new)


def _plan(matcher: str, known_intrinsics: bool) -> list[tuple[str, str, bool]]:
    """The attempts, in order: (matching to add, camera model, relaxed registration).

    OPENCV first; then exhaustive matching; then SIMPLE_RADIAL (one focal, one radial term: far more stable
    with a narrow field of view or few frames; written to the json as the equivalent OPENCV camera); then
    relaxed registration thresholds.  Known intrinsics stay OPENCV and fixed throughout.
    """
    plan = [("sequential", "OPENCV", False)] if matcher == "sequential" else []
    plan.append(("exhaustive", "OPENCV", False))
    model = "OPENCV" if known_intrinsics else "SIMPLE_RADIAL"
    if not known_intrinsics:
        plan.append(("exhaustive", model, False))
    plan.append(("exhaustive", model, True))
    return plan


def fresh_database(work_dir) -> Path:
    """``work_dir/database.db`` for a new pycolmap run: the folder created, an earlier database (and its SQLite
    journal files) removed."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    db = work_dir / "database.db"
    for stale in (db, work_dir / "database.db-wal", work_dir / "database.db-shm"):
        stale.unlink(missing_ok=True)
    return db


def run_colmap(image_dir, work_dir, *, matcher: str = "sequential", min_fraction: float = 0.8,
               camera_params=None, max_features: int = 4096, verbose: bool = False) -> PoseResult:
    """Structure from motion on the images of ``image_dir`` (sorted by name = capture order).

    Attempts follow :func:`_plan` and stop as soon as ``min_fraction`` of the images register; the model with
    the most registered images (the earliest on a tie) wins.
    work_dir: receives ``database.db`` and ``sparse/0`` (the chosen model, binary); created if needed.
    matcher: "sequential" (video; exhaustive is added when too few register) or "exhaustive".
    camera_params: known OPENCV intrinsics (fx, fy, cx, cy, k1, k2, p1, p2) in pixels, kept fixed; None:
    estimated (one camera shared by all images).  max_features: SIFT features per image.
    """
    pycolmap = import_pycolmap()
    if matcher not in ("sequential", "exhaustive"):
        raise NfkitError(f"matcher must be 'sequential' or 'exhaustive', got {matcher!r}")
    _quiet_logs(pycolmap, verbose)
    image_dir, work_dir = Path(image_dir), Path(work_dir)
    db = fresh_database(work_dir)
    t0 = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "OPENCV"
    if camera_params is not None:
        reader.camera_params = ",".join(f"{float(v):.10g}" for v in camera_params)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = max_features
    pycolmap.extract_features(str(db), str(image_dir), camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction)
    with pycolmap.Database.open(str(db)) as database:
        n_images = database.num_images()
    attempts, best, matched = [], None, []
    work = work_dir / "attempt"
    for step, model, relaxed in _plan(matcher, camera_params is not None):
        t = time.perf_counter()
        if step not in matched:
            if step == "sequential":
                pairing = pycolmap.SequentialPairingOptions()
                pairing.overlap, pairing.quadratic_overlap, pairing.loop_detection = 10, True, False
                pycolmap.match_sequential(str(db), pairing_options=pairing)
            else:
                pycolmap.match_exhaustive(str(db))  # pairs matched before are skipped
            matched.append(step)
        _set_camera_model(pycolmap, db, model)
        rec = _map(pycolmap, db, image_dir, work, camera_params is None, relaxed)
        n_reg = rec.num_reg_images() if rec is not None else 0
        err = float(rec.compute_mean_reprojection_error()) if rec is not None else float("nan")
        name = "+".join(matched)
        attempts.append({"matcher": name, "camera_model": model, "relaxed": relaxed, "registered": n_reg,
                         "mean_reprojection_error_px": None if rec is None else round(err, 4),
                         "seconds": round(time.perf_counter() - t, 2)})
        if rec is not None and (best is None or n_reg > best[0].num_reg_images()):
            best = (rec, name, err, model)
        if best is not None and best[0].num_reg_images() >= min_fraction * n_images:
            break
    shutil.rmtree(work, ignore_errors=True)
    final = work_dir / "sparse" / "0"
    if final.exists():
        shutil.rmtree(final)
    if best is None:
        return PoseResult(None, n_images, 0, float("nan"), 0, "+".join(matched), attempts,
                          time.perf_counter() - t0)
    final.mkdir(parents=True)
    best[0].write(str(final))
    rec, name, err, model = best
    return PoseResult(rec, n_images, rec.num_reg_images(), err, rec.num_points3D(), name, attempts,
                      time.perf_counter() - t0, model)


def read_colmap_model(path):
    """A COLMAP model folder (binary or text) -> ``pycolmap.Reconstruction``; NfkitError if unreadable."""
    pycolmap = import_pycolmap()
    p = Path(os.fspath(path))
    if not is_colmap_model_dir(p):
        raise NfkitError(f"{p}: not a COLMAP model folder (expected cameras, images and points3D .bin or .txt)")
    try:
        return pycolmap.Reconstruction(str(p))
    except Exception as e:
        raise NfkitError(f"{p}: cannot read the COLMAP model ({str(e).strip().splitlines()[0] if str(e) else e})") from e


def camera_intrinsics(camera) -> dict:
    """A pycolmap Camera -> nerfstudio keys fl_x, fl_y, cx, cy, w, h, k1, k2, p1, p2 (pixels)."""
    model = camera.model_name if hasattr(camera, "model_name") else str(camera.model).split(".")[-1]
    if model not in CAMERA_PARAMS:
        raise NfkitError(f"camera {camera.camera_id}: unsupported COLMAP camera model {model} (supported: "
                         f"{', '.join(CAMERA_PARAMS)}); undistort the images or re-run COLMAP with OPENCV")
    p = dict(zip(CAMERA_PARAMS[model], (float(v) for v in camera.params)))
    fx = p.get("fx", p.get("f"))
    fy = p.get("fy", p.get("f"))
    return {"fl_x": fx, "fl_y": fy, "cx": p["cx"], "cy": p["cy"], "w": int(camera.width), "h": int(camera.height),
            "k1": p.get("k1", 0.0), "k2": p.get("k2", 0.0), "p1": p.get("p1", 0.0), "p2": p.get("p2", 0.0)}


def colmap_c2w(cam_from_world: np.ndarray) -> np.ndarray:
    """[3, 4] (or [4, 4]) COLMAP world->camera (OpenCV) -> [4, 4] camera-to-world, OpenGL axes, saved world."""
    w2c = np.eye(4)
    w2c[:3, :] = np.asarray(cam_from_world, dtype=np.float64)[:3, :4]
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1:3] *= -1.0
    a = np.eye(4)
    a[:3, :] = APPLIED_TRANSFORM
    return a @ c2w


def write_ply(path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY of points. xyz: [P, 3] float (stored float32); rgb: [P, 3] uint8. Atomic."""
    xyz, rgb = np.asarray(xyz, np.float32).reshape(-1, 3), np.asarray(rgb, np.uint8).reshape(-1, 3)
    rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["red"], rec["green"], rec["blue"] = rgb.T
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    _atomic_write(Path(path), header.encode("ascii") + rec.tobytes())


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open() keeps the umask's permissions
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def colmap_to_transforms(model, out_json, image_dir, *, ply_name: str = "sparse_pc.ply") -> dict:
    """Writes a nerfstudio ``transforms.json`` (atomically) for the registered images of a COLMAP model.

    model: a ``pycolmap.Reconstruction`` or a COLMAP model folder (text or binary).
    out_json: the json to write; ``file_path`` entries are relative to its folder.
    image_dir: the folder the model's image names are relative to.
    ply_name: sparse point cloud file, next to the json (None: no PLY, no ``ply_file_path``).
    Frames are sorted by image name.  One camera -> top-level intrinsics; several -> per-frame intrinsics.
    Returns the json dict.  Raises NfkitError for an unsupported camera model or a model without poses.
    """
    rec = read_colmap_model(model) if isinstance(model, (str, os.PathLike)) else model
    out_json, image_dir = Path(out_json), Path(image_dir)
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise NfkitError(f"{out_json}: the COLMAP model has no registered images")
    cam_ids = sorted({im.camera_id for im in images})
    intr = {cid: camera_intrinsics(rec.cameras[cid]) for cid in cam_ids}
    meta: dict = {"camera_model": "OPENCV"}
    if len(cam_ids) == 1:
        meta.update(intr[cam_ids[0]])
    frames = []
    for im in images:
        rel = Path(os.path.relpath(image_dir / im.name, out_json.parent)).as_posix()
        c2w = colmap_c2w(im.cam_from_world().matrix())
        frame = {"file_path": rel, "transform_matrix": c2w.tolist(), "colmap_im_id": int(im.image_id)}
        if len(cam_ids) > 1:
            frame.update(intr[im.camera_id])
        frames.append(frame)
    meta["frames"] = frames
    meta["applied_transform"] = APPLIED_TRANSFORM.tolist()
    pts = list(rec.points3D.values())
    if pts:
        xyz = np.array([p.xyz for p in pts], dtype=np.float64) @ APPLIED_TRANSFORM[:, :3].T
        rgb = np.array([p.color for p in pts], dtype=np.uint8)
        lo, hi = np.percentile(xyz, 5, axis=0), np.percentile(xyz, 95, axis=0)
        meta["nfkit_points_bounds"] = [lo.tolist(), hi.tolist()]
        meta["nfkit_num_points"] = len(pts)
        if ply_name:
            write_ply(out_json.parent / ply_name, xyz, rgb)
            meta["ply_file_path"] = ply_name
    _atomic_write(out_json, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return meta
