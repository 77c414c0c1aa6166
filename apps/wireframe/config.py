"""``nfkit wireframe``'s options (one dataclass; saved into every output's metrics.json)."""
from __future__ import annotations

from dataclasses import dataclass

DETECTORS = ("auto", "hawp", "lsd")


@dataclass
class WireframeConfig:
    data: str = ""
    out: str = "outputs/wireframe"
    lines: str = ""  # folder of HAWP JSON files (<image stem>.json); empty: see detector
    detector: str = "auto"  # auto: --lines, else DATA/hawp when present, else LSD | hawp | lsd
    gt: str = ""  # ground-truth lines.json for the ABC evaluation; empty: DATA/lines.json when present
    gt_frame: str = "auto"  # auto | world | unit-cube (see nfkit.apps.wireframe.evaluate)
    split: str = "all"  # training views: all | train (every 8th / 3 views held out)
    max_side: int = 128  # working image resolution (larger side, pixels); HAWP/LSD coordinates scaled to it
    steps: int = 3000
    lr: float = 2e-3
    lr_final: float = 0.1
    line_rays: int = 256  # rays per step from one view's support pixels
    rgb_rays: int = 128  # rays per step from random pixels of random views (colour only)
    support_radius: float = 2.0  # support pixels: within this many pixels (working resolution) of a segment
    n_steps_per_ray: int = 128  # marching step = AABB diagonal / this
    grid_resolution: int = 64
    sdf_hidden: int = 64
    sdf_layers: int = 4
    sdf_freqs: int = 6
    beta_lr_scale: float = 1.0  # VolSDF beta learns at lr * this (nfkit's default 0.1 sharpened too slowly here)
    head_hidden: int = 128
    head_freqs: int = 4  # frequency encoding of p in the attraction head's input (0: NEAT's input)
    w_eikonal: float = 0.1
    w_line: float = 0.01
    w_j3d: float = 0.1
    w_j2d: float = 0.01
    mask_weight: float = 0.1  # RGBA data only
    dark_mask: bool = True  # RGB data: alpha from thresholding a dark background (the mask term; off: colour only)
    gjp: bool = True  # Global Junction Perceiving (off: junctions by clustering rendered endpoints)
    n_junctions: int = 64
    junction_dim: int = 64
    junction_gate_px: float = 10.0  # GJP keeps 2-D matches under this many pixels (at 512 px, scaled)
    extract_radius: float = 1.0  # extraction: support pixels within this many pixels
    extract_rays: int = 3000  # extraction: at most this many rays a view
    reproj_px: float = 1.0  # extraction: RMS reprojection error of a kept ray (pixels, working resolution)
    min_rays: int = 3  # extraction: rays behind one (view, 2-D segment) 3-D segment
    snap_steps: int = 1  # Newton steps onto f = 0 (NEAT: one); 0 keeps the decoded positions (|f| still filters)
    snap_tol: float = 0.05  # global junctions kept within this of the surface (normalised units; cameras at 4)
    junction_radius: float = 0.04  # junctions closer than this merge (normalised units)
    assign_radius: float = 0.1  # segment endpoints vote for junctions within this (normalised units)
    check_px: float = 2.0  # visibility check: projected edge within this of a 2-D segment (pixels, working res.)
    min_views: int = 0  # votes and visibility check: in at least this many views; 0: min(5, max(2, views // 4))
    min_vote_ratio: float = 0.25  # an edge is voted for from >= this share of the views that see it (0: off)
    occlusion_tol: float = 0.05  # a view sees a point when the surface along its ray is no nearer than this
    seed: int = 0
    resume: bool = False  # continue from DIR/checkpoint (the CLI checkpoints every checkpoint_seconds and on Ctrl-C)
    checkpoint_seconds: float = 60.0
    progress: bool = True


HELP = {
    "data": "dataset folder (any layout nfkit reads: IDR/NEAT cameras.npz, Middlebury, transforms.json, ...)",
    "out": "output folder",
    "lines": "folder of HAWP wireframe JSON files, one per image (<image stem>.json)",
    "detector": "2-D lines: auto (--lines, else DATA/hawp, else LSD), hawp or lsd",
    "gt": "ground-truth lines.json to score the wireframe (ABC protocol)",
    "resume": "continue an interrupted run from DIR/checkpoint (same options)",
    "checkpoint_seconds": "checkpoint DIR/checkpoint every this many seconds of training (and on Ctrl-C / kill)",
    "gjp": "Global Junction Perceiving (--no-gjp: junctions by clustering rendered endpoints)",
}
