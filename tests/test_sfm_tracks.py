"""nfkit sfm feature tracks: union–find over verified matches, inconsistent tracks split, one point per track."""
from __future__ import annotations

import numpy as np

from nfkit.apps.sfm.config import SfmConfig
from nfkit.apps.sfm.matches import Matches
from nfkit.apps.sfm.register import correspondences
from nfkit.apps.sfm.state import SfmState
from nfkit.apps.sfm.tracks import build_tracks, feature_tracks
from nfkit.apps.sfm.triangulate import triangulate_view

from test_sfm import K, look_at, sphere_points, synthetic_matches


def test_tracks_merge_chains_and_split_inconsistent():
    # image 0 kp 0 -- image 1 kp 2 -- image 2 kp 1: one track of 3 through two pairs (no (0, 2) match)
    # image 0 kp 1 -- image 1 kp 0 -- image 2 kp 0 -- image 0 kp 2: two features of image 0 -> split; none of
    # its three matches is confirmed by a third image (a feature matched to both ends): all left out
    pairs = {(0, 1): np.array([[0, 2], [1, 0]]), (1, 2): np.array([[2, 1], [0, 0]]), (0, 2): np.array([[2, 0]])}
    tr = build_tracks([3, 3, 2], pairs)
    assert len(tr) == 1 and tr.split == 1 and tr.refused == 3
    assert tr.elements == [{0: 0, 1: 2, 2: 1}]
    assert tr.track_of[0].tolist() == [0, -1, -1] and tr.track_of[1].tolist() == [-1, -1, 0]
    assert tr.track_of[2].tolist() == [-1, 0]
    assert tr.stats()["max_length"] == 3


def test_random_wrong_matches_split_tracks_instead_of_losing_them():
    """Long tracks (8 views, every pair matched) + 10 % random wrong matches: connected components chain most
    features together; the split keeps nearly every true track whole and puts no two features of an image in one."""
    rng = np.random.default_rng(0)
    n_img, n_pts = 8, 400
    pairs = {}
    for i in range(n_img):
        for j in range(i + 1, n_img):
            m = np.stack([np.arange(n_pts), np.arange(n_pts)], 1)
            wrong = rng.random(n_pts) < 0.1
            m[wrong, 1] = rng.integers(0, n_pts, int(wrong.sum()))
            pairs[(i, j)] = m
    tr = build_tracks([n_pts] * n_img, pairs)
    assert tr.split >= 1 and tr.refused > 0
    for e in tr.elements:  # one feature of each image a track: dicts guarantee it, track_of must agree
        assert all(tr.track_of[i][k] == tr.track_of[next(iter(e))][e[next(iter(e))]] for i, k in e.items())
    whole = sum(1 for e in tr.elements if len(e) == n_img and len(set(e.values())) == 1)
    assert whole >= 0.9 * n_pts


def _four_views():
    X = sphere_points(300)
    poses = [look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 0.4])) for a in (0.0, 0.3, 0.6, 0.9)]
    full = synthetic_matches(poses, X)
    # only consecutive pairs are matched: view 3 reaches the (0, 1) points only through the chain 3-2-1
    pairs = {p: m for p, m in full.pairs.items() if p[1] == p[0] + 1}
    m = Matches(full.names, full.sizes, full.keypoints, pairs, K.copy(), True)
    return m, poses, X


def test_new_view_extends_track_points_instead_of_duplicating():
    m, poses, X = _four_views()
    cfg = SfmConfig(neural_triangulation=False, min_tri_angle=0.5)
    st = SfmState(K=K.copy(), n_images=4)
    st.poses = {0: poses[0], 1: poses[1]}
    st.order = [0, 1]
    made = triangulate_view(st, m, 1, cfg)
    assert made["new_points"] > 50
    n_pts = len(st.live_ids())
    st.poses[2] = poses[2]
    st.order.append(2)
    # view 2 sees the (0, 1) points; drop its observations so that only the tracks link 3 to them
    triangulate_view(st, m, 2, cfg)
    for kp, pid in list(st.obs[2].items()):
        st.remove_observation(pid, 2)
    tracks = feature_tracks(m)
    reach3 = [p for p in range(n_pts) if st.alive[p]
              and 3 in tracks.elements[int(tracks.track_of[0][st.tracks[p][0]])]]
    assert len(reach3) > 30
    kps, pids = correspondences(st, m, 3)
    assert set(reach3) <= set(pids.tolist())  # 2D-3D through the chain 3-2-1 (no match of 3 with 0 or 1)
    st.poses[3] = poses[3]
    st.order.append(3)
    triangulate_view(st, m, 3, cfg)
    seen = {}
    for pid in st.live_ids():
        t = {int(tracks.track_of[i][k]) for i, k in st.tracks[pid].items()}
        assert len(t) == 1  # every point lies on one feature track
        t = t.pop()
        assert t not in seen, "two points for one track (a duplicate)"
        seen[t] = pid
    # the (0, 1) points got view 3's observations instead of new points
    assert np.mean([3 in st.tracks[p] for p in reach3 if st.alive[p]]) > 0.9


def test_registration_relaxes_the_surface_filter_when_every_view_fails():
    """An SDF that misses the points (sphere of radius 0.4, points at 0.8): the filter rejects every 2D-3D match,
    so the step registers the view without it (reported), instead of ending the run."""
    from nfkit.apps.sfm.pipeline import _register_next
    from nfkit.apps.sfm.surface import fit_sdf, make_field

    from test_sfm import _state_on_sphere

    st, m, poses, X = _state_on_sphere()
    cfg = SfmConfig()
    field = make_field(np.zeros(3), cfg)
    fit_sdf(field, sphere_points(2000, radius=0.4, seed=7), 150, 1e-3)
    failures = {}
    got = _register_next(st, m, cfg, [2], field, failures)
    assert got is not None and got[0] == 2 and got[1]["surface_filter"] == "relaxed"
    assert 2 in st.poses
