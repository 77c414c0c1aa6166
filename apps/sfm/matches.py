"""SIFT features, exhaustive matching and two-view geometric verification with pycolmap -> :class:`Matches`.

The same :class:`Matches` feed every arm of the benchmark (nfkit sfm, classic, pycolmap's mappers read the same
database).  Keypoints are in pixels with centres at +0.5 (COLMAP's convention, kept throughout nfkit sfm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nfkit.datasets.colmap import fresh_database, import_pycolmap
from nfkit.errors import NfkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PP_MAX_OFFSET = 0.1  # a refined principal point further than this (fraction of the size) from the centre: rejected


@dataclass
class Matches:
    """names [N]; sizes [N] (w, h); keypoints: N arrays [K_i, 2] (px); pairs: {(i, j), i < j: [M, 2] int
    (keypoint index in i, in j)} verified inliers only; K [3, 3] initial intrinsics; known_intrinsics: K given
    by the user; database: the pycolmap database path (for pycolmap's own mappers)."""

    names: list
    sizes: list
    keypoints: list
    pairs: dict
    K: np.ndarray
    known_intrinsics: bool
    database: str = ""
    image_dir: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.names)

    def pair(self, i: int, j: int) -> np.ndarray:
        """Verified matches of (i, j) as [M, 2] (column 0 indexes i's keypoints), empty [0, 2] if none."""
        if (i, j) in self.pairs:
            return self.pairs[(i, j)]
        if (j, i) in self.pairs:
            return self.pairs[(j, i)][:, ::-1]
        return np.zeros((0, 2), np.int64)


def list_images(folder: Path) -> list[Path]:
    """Images of a folder (sorted by name); NfkitError for a non-folder or fewer than two images."""
    if not folder.is_dir():
        raise NfkitError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise NfkitError(f"{folder}: structure from motion needs at least 2 images, found {len(files)}")
    return files


def parse_intrinsics(text: str) -> list[float] | None:
    """"fx,fy,cx,cy" -> [fx, fy, cx, cy] (px) or None for ""; NfkitError otherwise."""
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4 or vals[0] <= 0 or vals[1] <= 0:
        raise NfkitError(f"--intrinsics must be 'fx,fy,cx,cy' in pixels (positive focal), got {text!r}")
    return vals


def extract_and_match(image_dir, work_dir, intrinsics: list[float] | None = None,
                      max_features: int = 8192, peak_threshold: float = 0.002,
                      guided_matching: bool = True, matcher: str = "exhaustive") -> Matches:
    """pycolmap SIFT + matching + verification into ``work_dir/database.db``; read back.

    matcher: "exhaustive" (every pair) or "sequential" (video frames in name order: each with its next 10 and
    with quadratically spaced later frames, as the capture path's pycolmap mapper matches videos).

    intrinsics: [fx, fy, cx, cy] (one PINHOLE camera shared by all images) or None (PINHOLE with COLMAP's
    prior focal, 1.2 * max side).
    """
    pycolmap = import_pycolmap()
    try:
        pycolmap.logging.minloglevel = 2
    except Exception:  # logging controls differ across builds
        pass
    image_dir, work_dir = Path(image_dir), Path(work_dir)
    list_images(image_dir)
    db = fresh_database(work_dir)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    if intrinsics is not None:
        reader.camera_params = ",".join(f"{v:.10g}" for v in intrinsics)
    ext = pycolmap.FeatureExtractionOptions()
    ext.sift.max_num_features = max_features
    ext.sift.peak_threshold = peak_threshold
    ext.num_threads = 1
    pycolmap.extract_features(str(db), str(image_dir), camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=ext)
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = 1
    mo.guided_matching = guided_matching
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap, pairing.quadratic_overlap, pairing.loop_detection = 10, True, False
        pycolmap.match_sequential(str(db), matching_options=mo, pairing_options=pairing)
    else:
        pycolmap.match_exhaustive(str(db), matching_options=mo)
    return read_database(db, image_dir, intrinsics is not None)


def read_database(db, image_dir, known_intrinsics: bool) -> Matches:
    """A pycolmap database -> :class:`Matches` (images in name order)."""
    pycolmap = import_pycolmap()
    with pycolmap.Database.open(str(db)) as d:
        images = sorted(d.read_all_images(), key=lambda im: im.name)
        if len(images) < 2:
            raise NfkitError(f"{image_dir}: fewer than 2 readable images")
        cam = d.read_camera(images[0].camera_id)
        index = {im.image_id: i for i, im in enumerate(images)}
        keypoints = [np.asarray(d.read_keypoints(im.image_id))[:, :2].astype(np.float64) for im in images]
        pair_ids, geoms = d.read_two_view_geometries()
    pairs = {}
    for pid, g in zip(pair_ids, geoms):
        a, b = pycolmap.pair_id_to_image_pair(pid)
        m = np.asarray(g.inlier_matches, np.int64).reshape(-1, 2)
        if len(m) == 0 or a not in index or b not in index:
            continue
        i, j = index[a], index[b]
        pairs[(i, j) if i < j else (j, i)] = m if i < j else m[:, ::-1].copy()
    fx, fy, cx, cy = (float(v) for v in cam.params[:4])
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    return Matches([im.name for im in images], [(cam.width, cam.height)] * len(images), keypoints, pairs, K,
                   known_intrinsics, str(db), str(image_dir))


def _simple_pinhole_copy(db, out: Path) -> Path:
    """A copy of the database whose cameras are SIMPLE_PINHOLE (one focal: PINHOLE's separate fx, fy drift apart
    when a mapper refines them; principal point at the image centre) -> its path."""
    import shutil

    pycolmap = import_pycolmap()
    copy = fresh_database(out)
    shutil.copyfile(db, copy)
    with pycolmap.Database.open(str(copy)) as d:
        for cam in d.read_all_cameras():
            new = pycolmap.Camera.create_from_model_name(cam.camera_id, "SIMPLE_PINHOLE",
                                                         float(cam.mean_focal_length()), cam.width, cam.height)
            new.has_prior_focal_length = cam.has_prior_focal_length
            d.update_camera(new)
    return copy


def estimate_intrinsics(matches: Matches, work_dir, refine_principal_point: bool = False) -> str:
    """Unknown intrinsics: one pycolmap incremental mapping run on a copy of the database with one SIMPLE_PINHOLE
    camera (focal refined; the principal point too with ``refine_principal_point``); only its camera is kept
    (``matches.K`` is replaced, fx = fy; nfkit sfm still makes every pose itself).  Falls back to the prior focal
    (1.2 x max side) when the mapper builds no model, and to the image centre when the refined principal point
    lies further than ``PP_MAX_OFFSET`` of the image size from it.  Returns where K came from."""
    pycolmap = import_pycolmap()
    try:
        pycolmap.logging.minloglevel = 2
    except Exception:  # logging controls differ across builds
        pass
    out = Path(work_dir) / "intrinsics_model"
    out.mkdir(parents=True, exist_ok=True)
    db = _simple_pinhole_copy(matches.database, out)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.min_model_size = 3
    opts.num_threads = 1
    opts.random_seed = 0
    opts.ba_refine_focal_length, opts.ba_refine_principal_point = True, refine_principal_point
    try:
        models = pycolmap.incremental_mapping(str(db), matches.image_dir, str(out), opts)
    except Exception:  # a failed run leaves the prior focal in place
        models = {}
    if not models:
        return "prior focal (1.2 x max side; pycolmap's mapper built no model)"
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    cam = next(iter(rec.cameras.values()))
    f, cx, cy = (float(v) for v in cam.params[:3])
    pp = ", principal point refined" if refine_principal_point else ""
    if max(abs(cx - cam.width / 2) / cam.width, abs(cy - cam.height / 2) / cam.height) > PP_MAX_OFFSET:
        cx, cy, pp = cam.width / 2, cam.height / 2, f", refined principal point ({cx:.1f}, {cy:.1f}) rejected"
    matches.K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    return (f"pycolmap incremental mapping's focal{pp} (SIMPLE_PINHOLE; {rec.num_reg_images()} views registered "
            f"there; poses not used)")
