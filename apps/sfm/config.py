"""``nfkit sfm`` configuration: one dataclass; the benchmark's arms are switches of it, not copies."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SfmConfig:
    """Every option of ``nfkit sfm`` (budgets in steps, never seconds).

    Arms: ``neural_triangulation`` (sphere-trace both rays to f = 0, else DLT), ``neural_ba`` (points snapped to
    f = 0 by one Newton step, else free points), ``surface_filter`` (PnP only on points with |f(X)| < tau).
    (a) nfkit sfm: all three on; (d) classic: all off (no SDF at all); (e): surface_filter off.  Every arm uses the
    feature tracks (``tracks.py``) and, with ``final_lm_ba``, ends with pycolmap's LM bundle adjustment
    (``refine.py``) started from what the arm built.
    """

    images: str = ""
    out: str = "outputs/sfm"
    intrinsics: str = ""  # "fx,fy,cx,cy" in pixels, kept fixed; "" -> pycolmap mapper's focal, refined in BA
    estimate_principal_point: bool = True  # without --intrinsics: the mapper run refines it too (kept when it
    # stays within 10 % of the image size of the centre; the temple ring's is 18 px off and the chain drifts)
    max_side: int = 800  # frames / images larger than this are downscaled first (video frames: capture path)
    max_features: int = 8192  # SIFT features per image
    sift_peak_threshold: float = 0.002  # lower than COLMAP's 0.0067: more features on dim, textureless objects
    guided_matching: bool = True
    neural_triangulation: bool = True
    neural_ba: bool = True
    surface_filter: bool = True
    surface_tau: float = 0.02  # |f(X)| < tau * scene radius for PnP correspondences
    min_inliers: int = 12  # PnP inliers (and correspondences) needed to register a view
    pnp_max_error: float = 4.0  # px, RANSAC threshold
    max_reproj: float = 4.0  # px, new points / kept observations
    min_tri_angle: float = 1.5  # degrees, for new points
    neural_reproj_scale: float = 2.0  # neural triangulation accepts midpoints within this x max_reproj (BA refines)
    dlt_on_surface: bool = True  # neural triangulation: a track the traces lose gets its DLT point when |f| < tau
    free_points_on_surface: bool = True  # neural BA: points free *and* snapped (slide on f = 0); False: upstream
    # SDF field (CPU-sized MLP backbone, geometric sphere init)
    sdf_backbone: str = "mlp"  # mlp (frequency encoding, autograd normals) | hashgrid (C++ kernel, FD normals)
    sdf_hidden: int = 64
    sdf_layers: int = 3
    sdf_freqs: int = 5
    init_steps: int = 300  # SDF fit after two-view init (poses fixed)
    tri_steps: int = 60  # SDF fit before each neural triangulation
    ba_steps: int = 150  # local BA after each registration
    global_ba_steps: int = 300  # global BA every ``global_every`` views and at the end
    global_every: int = 4
    final_ba_steps: int = 600
    ba_batch_points: int = 2048  # points per BA step (drawn at random when a BA sees more; 0 = all): the cost of
    # a neural BA step is the Newton snap of its points, and a 40-frame video's global BAs see 15k
    lr_rot: float = 2e-3
    lr_trans: float = 4e-3
    lr_sdf: float = 1e-3
    ba_sdf_lr_scale: float = 0.1  # the SDF's rate in neural BA: lr_sdf * this (upstream: 1e-4 vs 1e-3)
    lr_points: float = 4e-3  # free-point BA (classic arm), in units of the scene radius
    w_surface: float = 10.0  # |f| weight (relative to the robust reprojection term, px)
    w_eikonal: float = 1.0
    refine_focal: bool = True  # only without --intrinsics
    final_lm_ba: bool = True  # after the final BA: one pycolmap (Ceres, LM) BA of all views and points (refine.py)
    reattach_scale: float = 8.0  # before it: tracks' lost observations re-attached, one LM solve at this Cauchy
    # scale (px), filter (0 = off): closes a chain that bent and lost its loop-closing observations to the filter
    polish_poses: bool = True  # after the final BA: each pose refined by pycolmap's LM on its points (held fixed)
    seed: int = 0
