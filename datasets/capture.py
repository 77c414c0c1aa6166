"""Captured input -> posed nerfstudio dataset: ``prepare_capture(INPUT, OUT)`` -> ``OUT/transforms.json``.

Accepted inputs (detected in this order):

1. a ``.json`` file (nerfstudio / instant-ngp transforms), a folder with ``transforms.json`` or a Blender folder
   (``transforms_train.json``, ...): returned as is (the json, or the Blender folder);
2. a COLMAP model folder (``cameras``, ``images``, ``points3D`` as ``.bin`` or ``.txt``), or a project folder
   with one in ``sparse/0`` or ``colmap/sparse/0``: converted to ``OUT/transforms.json`` (images stay in place,
   ``OUT/images`` links to their folder so the json names no file outside ``OUT``);
3. a video file (by extension, else probed with PyAV): ``n_frames`` sharp frames (:func:`select_frames`);
4. a folder of images (.png, .jpg, .jpeg; sorted by name, natural order): all of them;

anything else is an :class:`NfkitError` naming the path and these kinds.  For 3 and 4 the frames are written,
downscaled to ``max_side``, to ``OUT/images/frame_NNNNN.*``, posed with COLMAP (:func:`run_colmap`: videos
match sequentially, falling back to exhaustive; folders of up to 60 images match exhaustively) and converted
(:func:`colmap_to_transforms`).  ``OUT`` then holds ``images/``, ``colmap/`` (database, ``sparse/0``),
``transforms.json``, ``sparse_pc.ply`` and ``poses.json`` (the report: frames total / chosen / registered,
mean reprojection error, timings).  When poses cannot be recovered (no model, or fewer than 3 registered
frames) ``poses.json`` records the failure, no ``transforms.json`` is written, and a one-line NfkitError with
advice is raised.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from nfkit.errors import NfkitError

from .colmap import (_atomic_write, colmap_to_transforms, import_pycolmap, is_colmap_model_dir,
                     read_colmap_model, run_colmap)
from .idr import is_idr_dir
from .llff import is_llff_dir
from .middlebury import par_file
from .video import VIDEO_EXTENSIONS, is_video_file, output_size, select_frames

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MIN_REGISTERED = 3
MIN_FRACTION = 0.8
EXHAUSTIVE_MAX_IMAGES = 60
TOOL = "nfkit capture"
ACCEPTED = ("accepted: a video file (" + ", ".join(e.lstrip(".") for e in VIDEO_EXTENSIONS[:6]) + ", ...), "
            "a folder of .png/.jpg images, a transforms.json (or a folder with one), posed images (IDR/DTU "
            "cameras.npz, LLFF poses_bounds.npy, Middlebury *_par.txt), "
            "a COLMAP model folder (cameras/images/points3D .bin or .txt)")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files (.png, .jpg, .jpeg) directly in ``folder``, natural name order (frame2 before frame10)."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))


def detect_input(path) -> tuple[str, Path]:
    """(kind, path) with kind in {"transforms", "colmap", "video", "images"}; NfkitError otherwise.

    For "transforms" the path is the json file (a Blender folder: the folder), for "colmap" the model folder.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise NfkitError(f"{p}: not found ({ACCEPTED})")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "transforms", p
        if is_video_file(p):
            return "video", p
        raise NfkitError(f"{p}: unknown input kind ({ACCEPTED})")
    if (p / "transforms.json").is_file():
        return "transforms", p / "transforms.json"
    if any((p / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
        return "transforms", p  # a Blender / NeRF-synthetic folder: load_dataset takes the folder
    if is_idr_dir(p) or is_llff_dir(p) or par_file(p) is not None:
        return "transforms", p  # posed images that load_dataset reads as they are (IDR/DTU, LLFF, Middlebury)
    for model in (p, p / "sparse" / "0", p / "colmap" / "sparse" / "0"):
        if is_colmap_model_dir(model):
            return "colmap", model
    if list_images(p):
        return "images", p
    raise NfkitError(f"{p}: folder holds no images, transforms.json or COLMAP model ({ACCEPTED})")


def _find_model_images(model_dir: Path, first_name: str) -> Path | None:
    """The folder the model's image names are relative to: ``images/`` beside the model or up to 3 levels up."""
    d = model_dir.resolve()
    for up in [d, *list(d.parents)[:3]]:
        for cand in (up / "images", up):
            if (cand / first_name).is_file():
                return cand
    return None


def _check_out_dir(out: Path, inp: Path) -> None:
    """Refuses an ``out`` whose images/ or transforms.json were not written by us; clears our stale outputs."""
    ours = False
    if (out / "poses.json").is_file():
        try:
            ours = json.loads((out / "poses.json").read_text()).get("tool") == TOOL
        except (OSError, ValueError, AttributeError):
            ours = False
    if not ours and ((out / "images").exists() or (out / "transforms.json").exists()):
        raise NfkitError(f"{out}: already holds images/ or transforms.json not written by nfkit; "
                         f"choose an empty --out folder")
    if Path(inp).resolve().is_relative_to((out / "images").resolve()):
        raise NfkitError(f"{inp}: input lies inside the output's images/ folder; choose another --out folder")
    for stale in ("transforms.json", "sparse_pc.ply"):
        (out / stale).unlink(missing_ok=True)


def _remove_images(out: Path) -> None:
    """Removes ``out/images``: our folder of frames, or our link to a COLMAP model's image folder (never its files)."""
    d = out / "images"
    if d.is_symlink():
        d.unlink()
    else:
        shutil.rmtree(d, ignore_errors=True)


def _link_images(out: Path, image_dir: Path) -> Path:
    """The folder to name a COLMAP model's images from, inside ``out``: ``image_dir`` itself when it lies inside
    ``out``, else ``out/images`` as a symbolic link to it (a copy where links are not supported), so that the
    transforms.json never names files outside its folder (the reader refuses those by default)."""
    if image_dir.resolve().is_relative_to(out.resolve()):
        return image_dir
    link = out / "images"
    _remove_images(out)
    try:
        os.symlink(image_dir.resolve(), link, target_is_directory=True)
    except OSError:
        shutil.copytree(image_dir, link)
    return link


def _write_images(frames, out: Path) -> list[str]:
    """Writes [H, W, 3] uint8 frames as ``images/frame_NNNNN.png`` (via a temporary folder) -> file names."""
    import imageio.v3 as iio

    tmp = out / "images.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = []
    for i, f in enumerate(frames):
        name = f"frame_{i:05d}.png"
        iio.imwrite(tmp / name, np.asarray(f))
        names.append(name)
    _remove_images(out)
    os.replace(tmp, out / "images")
    return names


def _copy_images(files: list[Path], out: Path, max_side: int | None) -> tuple[list[str], float, float]:
    """Copies (or downscales to ``max_side``, as PNG) a folder's images -> (names, x scale, y scale)."""
    import imageio.v3 as iio

    from .images import read_image, resize_image

    tmp = out / "images.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names, size0, scale = [], None, (1.0, 1.0)
    for i, f in enumerate(files):
        img = read_image(f, f.parent)
        h, w = img.shape[:2]
        if size0 is None:
            size0 = (w, h)
        elif (w, h) != size0:
            raise NfkitError(f"{f}: is {w}x{h} but {files[0].name} is {size0[0]}x{size0[1]}; "
                             f"all images of a capture must have the same size")
        ow, oh = output_size(w, h, max_side)
        if (ow, oh) == (w, h):
            name = f"frame_{i:05d}{f.suffix.lower()}"
            shutil.copyfile(f, tmp / name)
        else:
            name = f"frame_{i:05d}.png"
            rgb = resize_image(img[..., :3], ow, oh).clamp(0, 1).mul(255).round().byte().numpy()
            iio.imwrite(tmp / name, rgb)
            scale = (ow / w, oh / h)
        names.append(name)
    _remove_images(out)
    os.replace(tmp, out / "images")
    return names, scale[0], scale[1]


def _write_report(out: Path, report: dict) -> None:
    _atomic_write(out / "poses.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))


def _failure_advice(kind: str, src: Path, n_reg: int, n: int, n_total: int) -> str:
    """The one-line error when fewer than 3 of the ``n`` chosen frames (of ``n_total``) got a pose."""
    what = "frames" if kind == "video" else "images"
    if kind == "video":
        more = f", or pass --frames {min(2 * n, n_total)}" if n_total > n else ""
        advice = (f"film more slowly around the subject, with more texture and visible camera motion "
                  f"(a static camera or a textureless scene cannot be posed){more}")
    else:
        advice = "take more, overlapping photos of a textured scene from different positions"
    if n_reg == 0:
        return f"{src}: camera poses could not be recovered from any of the {n} {what}: {advice}"
    return f"{src}: only {n_reg} of {n} {what} could be registered: {advice}"


def prepare_capture(input_path, out_dir, n_frames: int = 40, max_side: int | None = 640, *,
                    matcher: str | None = None, camera_params=None, verbose: bool = False, log=print,
                    poser=None) -> Path:
    """Makes ``input_path`` a posed dataset -> the transforms.json to load (see the module docstring).

    n_frames: frames chosen from a video.  max_side: larger side of the written frames (video and image
    folders).  matcher: "sequential" or "exhaustive" (None: sequential for videos, exhaustive for folders of
    up to 60 images).  camera_params: known OPENCV intrinsics (fx, fy, cx, cy, k1, k2, p1, p2) of the input
    images in pixels, kept fixed (scaled when frames are downscaled); None: estimated.  log: prints the report.
    poser: what poses the frames (videos and image folders): a callable with :func:`run_colmap`'s signature
    returning a :class:`~.colmap.PoseResult` (None: :func:`run_colmap`, pycolmap's incremental mapper; the apps
    pass other posers in, e.g. ``nfkit fit --poses neural``, since the library never imports the apps).
    The report is also written to ``out_dir/poses.json``.
    """
    kind, src = detect_input(input_path)
    out = Path(os.fspath(out_dir)).expanduser()
    if camera_params is not None:
        camera_params = [float(v) for v in camera_params]
        if len(camera_params) != 8:
            raise NfkitError(f"camera_params must be 8 numbers (fx, fy, cx, cy, k1, k2, p1, p2), "
                             f"got {len(camera_params)}")
    t0 = time.perf_counter()
    if kind == "transforms":
        log(f"capture: {src} already has poses (transforms json); using it as is")
        return src
    if kind == "colmap":
        rec = read_colmap_model(src)
        names = sorted(im.name for im in rec.images.values())
        if not names:
            raise NfkitError(f"{src}: the COLMAP model has no images")
        image_dir = _find_model_images(src, names[0])
        if image_dir is None:
            raise NfkitError(f"{src}: cannot find image {names[0]} of the COLMAP model (looked in images/ "
                             f"beside the model and up to 3 folders up)")
        _check_out_dir(out, src)
        out.mkdir(parents=True, exist_ok=True)
        meta = colmap_to_transforms(rec, out / "transforms.json", _link_images(out, image_dir))
        err = float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else float("nan")
        report = {"tool": TOOL, "kind": kind, "input": str(src), "ok": True, "n_images": rec.num_images(),
                  "n_registered": len(meta["frames"]),
                  "mean_reprojection_error_px": None if np.isnan(err) else round(err, 4),
                  "seconds": round(time.perf_counter() - t0, 2)}
        _write_report(out, report)
        log(f"capture: COLMAP model {src}: {report['n_registered']}/{report['n_images']} images posed, "
            f"reprojection error {err:.3f} px -> {out / 'transforms.json'}")
        return out / "transforms.json"
    import_pycolmap()  # fail early, before decoding, when pycolmap is missing
    _check_out_dir(out, src)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"tool": TOOL, "kind": kind, "input": str(src), "ok": False, "max_side": max_side}
    try:
        return _pose_frames(kind, src, out, report, t0, n_frames, max_side, matcher, camera_params, verbose, log,
                            poser or run_colmap)
    except NfkitError as e:
        _write_report(out, {**report, "error": str(e)})
        raise


def _pose_frames(kind, src, out, report, t0, n_frames, max_side, matcher, camera_params, verbose, log,
                 poser) -> Path:
    """Frames (video or folder) -> OUT/images -> COLMAP -> OUT/transforms.json; fills ``report``."""
    sx = sy = 1.0
    if kind == "video":
        sel = select_frames(src, n_frames, max_side)
        names = _write_images(sel.frames, out)
        h, w = sel.frames[0].shape[:2]
        report.update(n_total=sel.n_total, n_chosen=len(names), fps=sel.fps, frame_indices=sel.indices,
                      sharpness=[round(s, 2) for s in sel.scores], width=w, height=h)
        log(f"capture: {src}: chose {len(names)} of {sel.n_total} frames (sharpest per window), {w}x{h}")
        matcher = matcher or "sequential"
    else:
        files = list_images(src)
        names, sx, sy = _copy_images(files, out, max_side)
        report.update(n_total=len(files), n_chosen=len(names), source_names=[f.name for f in files])
        log(f"capture: {src}: {len(names)} images")
        matcher = matcher or ("exhaustive" if len(names) <= EXHAUSTIVE_MAX_IMAGES else "sequential")
    report["decode_seconds"] = round(time.perf_counter() - t0, 2)
    n = len(names)
    if n < MIN_REGISTERED:
        raise NfkitError(f"{src}: only {n} frame(s) available; at least {MIN_REGISTERED} are needed "
                         f"(use a longer video or more images)")
    if camera_params is not None:  # pixel-centre convention: scaling the image scales f and c alike
        cp = camera_params
        camera_params = [cp[0] * sx, cp[1] * sy, cp[2] * sx, cp[3] * sy, *cp[4:]]
    res = poser(out / "images", out / "colmap", matcher=matcher, min_fraction=MIN_FRACTION,
                camera_params=camera_params, verbose=verbose)
    report.update(res.summary())
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if res.reconstruction is None or res.n_registered < MIN_REGISTERED:
        raise NfkitError(_failure_advice(kind, src, res.n_registered, n, report["n_total"]))
    meta = colmap_to_transforms(res.reconstruction, out / "transforms.json", out / "images")
    posed = {Path(f["file_path"]).name for f in meta["frames"]}
    report.update(ok=True, unregistered=[nm for nm in names if nm not in posed])
    report["seconds"] = round(time.perf_counter() - t0, 2)
    _write_report(out, report)
    hint = "film more slowly or pass more --frames" if kind == "video" else "add more overlapping photos"
    warn = "" if res.registered_fraction >= MIN_FRACTION else f"  (low: {hint})"
    log(f"capture: registered {res.n_registered}/{n} frames ({100 * res.registered_fraction:.0f}%){warn}, "
        f"mean reprojection error {res.mean_reprojection_error:.3f} px, {res.n_points} points, "
        f"{res.matcher} matching, {res.camera_model} camera, {report['seconds']:.1f} s -> {out / 'transforms.json'}")
    return out / "transforms.json"
