"""nfkit sfm (issue 20): two-view init, the surface filter in PnP, BA write-back, bad input."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nfkit.apps.sfm.bundle import bundle_adjust
from nfkit.apps.sfm.config import SfmConfig
from nfkit.apps.sfm.geometry import project
from nfkit.apps.sfm.init import initialise
from nfkit.apps.sfm.matches import Matches
from nfkit.apps.sfm.register import register_view, surface_filter
from nfkit.apps.sfm.state import SfmState
from nfkit.apps.sfm.surface import fit_sdf, make_field
from nfkit.apps.sfm.triangulate import triangulate_view
from nfkit.pose_eval import align_poses, rotation_angle_deg, umeyama

K = np.array([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]])


def look_at(c: np.ndarray, target=np.zeros(3)) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (OpenCV) pose of a camera at c looking at target (world up +z)."""
    z = (target - c) / np.linalg.norm(target - c)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ c


def sphere_points(n, radius=0.8, seed=0, centre=np.zeros(3)):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return centre + radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def synthetic_matches(poses, X, noise=0.0, seed=0) -> Matches:
    """Keypoints = projections (visible: in front of the camera and on the camera side of the sphere)."""
    rng = np.random.default_rng(seed)
    kps, vis = [], []
    for R, t in poses:
        uv, z = project(K, R, t, X)
        c = -R.T @ t
        v = (z > 0) & (((X - c) * X).sum(1) < 0)
        kps.append(uv + noise * rng.normal(size=uv.shape))
        vis.append(v)
    pairs = {}
    for i in range(len(poses)):
        for j in range(i + 1, len(poses)):
            idx = np.nonzero(vis[i] & vis[j])[0]
            if len(idx):
                pairs[(i, j)] = np.stack([idx, idx], 1)
    return Matches([f"v{i}.png" for i in range(len(poses))], [(320, 240)] * len(poses), kps, pairs, K.copy(), True)


def test_pose_eval_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(10, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    dst = 2.5 * src @ q.T + np.array([1.0, -2, 3])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(2.5) and np.allclose(r, q) and np.allclose(t, [1, -2, 3])
    ref = {k: look_at(np.array([3 * np.cos(a), 3 * np.sin(a), 0.5])) for k, a in enumerate(np.linspace(0, 5, 6))}
    est = {}
    for k, (R, t) in ref.items():  # the same cameras in a world scaled by 0.5 and rotated by q
        c = -R.T @ t
        c2 = 0.5 * q @ c
        R2 = R @ q.T
        est[k] = (R2, -R2 @ c2)
    ev = align_poses(est, ref)
    assert ev["max_rot_err_deg"] < 1e-6 and ev["max_centre_err_pct"] < 1e-6


def test_two_view_init_recovers_relative_pose():
    X = sphere_points(400)
    p0, p1 = look_at(np.array([3.0, 0, 0.3])), look_at(np.array([3.0 * np.cos(0.4), 3.0 * np.sin(0.4), 0.3]))
    m = synthetic_matches([p0, p1], X, noise=0.3)
    state, seeds, _ = initialise(m, SfmConfig())
    R_rel_gt = p1[0] @ p0[0].T
    t_rel_gt = p1[1] - R_rel_gt @ p0[1]
    R, t = state.poses[state.order[1]]
    if state.order[0] == 1:  # the pair may come in either order
        R_rel_gt, t_rel_gt = R_rel_gt.T, -R_rel_gt.T @ t_rel_gt
    assert rotation_angle_deg(R.T @ R_rel_gt) < 0.6  # 0.3 px noise, no refinement yet
    cos = t @ t_rel_gt / (np.linalg.norm(t) * np.linalg.norm(t_rel_gt))
    assert cos > np.cos(np.radians(1.0))
    assert np.allclose(state.poses[state.order[0]][0], np.eye(3)) and len(seeds) > 100


def _state_on_sphere(n=300, seed=0):
    """A state whose points lie on the field's initial sphere (radius 0.8 about the origin), 2 cameras."""
    X = sphere_points(n, seed=seed)
    poses = [look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 0.4])) for a in (0.0, 0.35, 0.7)]
    m = synthetic_matches(poses, X)
    st = SfmState(K=K.copy(), n_images=3)
    st.poses = {0: poses[0], 1: poses[1]}
    st.order = [0, 1]
    idx = m.pairs[(0, 1)][:, 0]
    st.add_points(X[idx], [{0: int(k), 1: int(k)} for k in idx])
    return st, m, poses, X


def test_pnp_surface_filter_rejects_off_surface_points():
    st, m, poses, X = _state_on_sphere()
    cfg = SfmConfig(surface_tau=0.02)
    field = make_field(np.zeros(3), cfg)
    fit_sdf(field, sphere_points(2000, seed=7), 150, 1e-3)  # f ~ |x| - 0.8: the points' sphere
    # Corrupt a third of the points: moved deep inside (f ~ -0.5, which upstream's signed test f < tau passes)
    live = st.live_ids()
    bad = live[::3]
    st.points[bad] *= 0.35
    keep = surface_filter(field, st.points, cfg.surface_tau)
    assert not keep[bad].any()
    good = np.setdiff1d(live, bad)
    assert keep[good].mean() > 0.95
    ok, reason, stats = register_view(st, m, 2, cfg, field)
    assert ok, reason
    assert stats["after_surface_filter"] < stats["correspondences"]
    in_view = set(st.obs[2].values())
    assert not (in_view & set(bad.tolist()))  # no off-surface point got an observation in the new view
    R, t = st.poses[2]
    assert rotation_angle_deg(R.T @ poses[2][0]) < 0.1


def test_neural_triangulation_takes_dlt_points_on_the_surface_only():
    """A track the sphere traces lose (here: every trace, reprojection tolerance 0) gets its DLT point only when
    that point lies on the surface (|f| < tau): the outer sphere's points come in, the inner sphere's do not."""
    X = np.concatenate([sphere_points(200, seed=1), sphere_points(100, radius=0.45, seed=2)])
    poses = [look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 0.4])) for a in (0.0, 0.35)]
    m = synthetic_matches(poses, X)
    field = make_field(np.zeros(3), SfmConfig())
    fit_sdf(field, sphere_points(2000, seed=7), 150, 1e-3)  # f ~ |x| - 0.8
    added = {}
    for fallback in (False, True):
        st = SfmState(K=K.copy(), n_images=2)
        st.poses, st.order = {0: poses[0], 1: poses[1]}, [0, 1]
        cfg = replace(SfmConfig(), neural_reproj_scale=0.0, tri_steps=0, dlt_on_surface=fallback)
        out = triangulate_view(st, m, 1, cfg, field)
        added[fallback] = (out["new_points"], np.linalg.norm(st.points[st.live_ids()], axis=1))
    assert added[False][0] == 0
    n_outer = int((m.pairs[(0, 1)][:, 0] < 200).sum())
    n, radii = added[True]
    assert n >= 0.9 * n_outer and np.allclose(radii, 0.8, atol=1e-6)


def test_neural_ba_writes_points_back():
    """Upstream built a lazy map() that was never consumed: BA-refined points were lost. Here they must land in
    state.points: the stored points move onto the SDF's zero level set."""
    st, m, poses, X = _state_on_sphere(200)
    cfg = replace(SfmConfig(), surface_tau=1.0)
    field = make_field(np.zeros(3), cfg)
    live = st.live_ids()
    rng = np.random.default_rng(3)
    st.points[live] *= (1 + 0.03 * rng.choice([-1.0, 1.0], size=(len(live), 1)))  # 3 % off the surface
    before = st.points.copy()
    f_before = np.abs(field.sdf(torch.as_tensor(before[live], dtype=torch.float32)).detach().numpy())
    bundle_adjust(st, m, cfg, images=[1], steps=5, field=field)
    assert not np.allclose(st.points[live], before[live])
    f_after = np.abs(field.sdf(torch.as_tensor(st.points[live], dtype=torch.float32)).detach().numpy())
    assert f_after.mean() < 0.2 * f_before.mean()


@pytest.mark.parametrize("batch", [0, 64])  # all points every step / 64 drawn at random (ba_batch_points)
def test_classic_ba_writes_points_back_and_reduces_error(batch):
    st, m, poses, X = _state_on_sphere(200)
    cfg = SfmConfig(ba_batch_points=batch)
    live = st.live_ids()
    st.points[live] += np.random.default_rng(4).normal(scale=0.01, size=(len(live), 3))
    err0 = st.mean_reprojection_error(m.keypoints)
    before = st.points.copy()
    bundle_adjust(st, m, cfg, images=[1], steps=100, field=None)
    assert not np.allclose(st.points[live], before[live])
    assert st.mean_reprojection_error(m.keypoints) < 0.5 * err0


def test_lm_bundle_adjust_writes_back_and_recovers_poses():
    """pycolmap's LM finish (final_lm_ba): noisy points and a perturbed third pose -> poses, points written back."""
    from nfkit.apps.sfm.refine import lm_bundle_adjust

    X = sphere_points(300)
    poses = [look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 0.4])) for a in (0.0, 0.35, 0.7)]
    m = synthetic_matches(poses, X, noise=0.2)
    st = SfmState(K=K.copy(), n_images=3)
    st.poses = {i: (p[0].copy(), p[1].copy()) for i, p in enumerate(poses)}
    st.order = [0, 1, 2]
    seen = m.pairs[(0, 1)][:, 0]
    in2 = set(m.pairs[(0, 2)][:, 0].tolist())
    tracks = [{0: int(k), 1: int(k), **({2: int(k)} if k in in2 else {})} for k in seen]
    st.add_points(X[seen] + np.random.default_rng(5).normal(scale=0.01, size=(len(seen), 3)), tracks)
    w = np.radians(1.0)  # the third camera 1 degree off about z
    Rz = np.array([[np.cos(w), -np.sin(w), 0], [np.sin(w), np.cos(w), 0], [0, 0, 1]])
    st.poses[2] = (poses[2][0] @ Rz, poses[2][1])
    before = st.points.copy()
    rep = lm_bundle_adjust(st, m, refine_focal=False)
    assert rep["mean_px"][1] < 0.5 * rep["mean_px"][0]
    assert not np.allclose(st.points, before)
    assert rotation_angle_deg(st.poses[2][0].T @ poses[2][0]) < 0.1
    st.K[0, 0] = st.K[1, 1] = 520.0  # unknown intrinsics: one focal refined (fx = fy), back near the true 500
    rep = lm_bundle_adjust(st, m, refine_focal=True)
    assert st.K[0, 0] == st.K[1, 1] and abs(st.K[0, 0] - 500.0) < 5.0


def test_reattach_gives_points_back_their_lost_track_observations():
    """The reprojection filter drops the observations of a view that drifted; reattach_tracks restores them from
    the feature tracks (and only to live points, never a second point for one keypoint)."""
    from nfkit.apps.sfm.refine import reattach_tracks

    st, m, poses, X = _state_on_sphere(200)
    st.poses[2] = poses[2]  # view 2 registered: its keypoints in the points' tracks come in
    n = reattach_tracks(st, m)
    three = [int(p) for p in st.live_ids() if len(st.tracks[p]) == 3]
    assert n == len(three) > 30
    lost = three[:20]
    for pid in lost:  # the filter dropped their view-1 observations
        st.remove_observation(pid, 1)
    assert reattach_tracks(st, m) == 20 and all(1 in st.tracks[p] for p in lost)
    assert reattach_tracks(st, m) == 0
    assert len(set(st.obs[2].values())) == len(st.obs[2])


def _one_line(rc, capsys, needle):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfkit: error:") and needle in lines[0], err


def test_bad_input_one_line(tmp_path, capsys):
    import imageio.v3 as iio

    from nfkit.apps.cli import main

    one = tmp_path / "one"
    one.mkdir()
    iio.imwrite(one / "a.png", np.zeros((64, 64, 3), np.uint8))
    _one_line(main(["sfm", str(one), "--out", str(tmp_path / "o1")]), capsys, "at least 2 images")
    _one_line(main(["sfm", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]), capsys,
              "not a folder of images")
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(2):
        iio.imwrite(flat / f"{k}.png", np.full((64, 64, 3), 40 * k, np.uint8))
    _one_line(main(["sfm", str(flat), "--out", str(tmp_path / "o3")]), capsys, "verified matches")
    _one_line(main(["sfm", str(flat), "--out", str(tmp_path / "o4"), "--intrinsics", "1,2"]), capsys,
              "--intrinsics")
