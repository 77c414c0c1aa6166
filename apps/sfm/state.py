"""The reconstruction being built: poses, 3D points and their tracks (observations)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import project


@dataclass
class SfmState:
    """K [3, 3]; poses {image index: (R [3, 3], t [3])} world->camera (OpenCV); points [P, 3] (rows of dead
    points are kept, ``alive[p]`` False); tracks [P] {image: keypoint}; obs [N images] {keypoint: point};
    order: registration order; skipped {image: reason}; centre [3], radius: the scene's sphere (world units);
    track_point {feature track id: point id} (:mod:`.tracks`: one point per track, never a duplicate)."""

    K: np.ndarray
    n_images: int
    poses: dict = field(default_factory=dict)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    alive: list = field(default_factory=list)
    tracks: list = field(default_factory=list)
    obs: list = field(default_factory=list)
    order: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 1.0
    track_point: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.obs:
            self.obs = [dict() for _ in range(self.n_images)]

    def add_points(self, X: np.ndarray, tracks: list[dict], track_ids=None) -> list[int]:
        """Appends points X [M, 3] with tracks {image: keypoint} (and their feature-track ids [M]); returns ids."""
        start = len(self.points)
        self.points = np.concatenate([self.points, np.asarray(X, np.float64).reshape(-1, 3)], 0)
        ids = []
        for k, tr in enumerate(tracks):
            pid = start + k
            self.alive.append(True)
            self.tracks.append(dict(tr))
            for img, kp in tr.items():
                self.obs[img][int(kp)] = pid
            ids.append(pid)
            if track_ids is not None:
                self.track_point[int(track_ids[k])] = pid
        return ids

    def point_of_track(self, tracks, t: int):
        """The live point of feature track ``t`` (recorded, or found through an observation) or None."""
        pid = self.track_point.get(t)
        if pid is not None and self.alive[pid]:
            return pid
        for img, kp in tracks.elements[t].items():
            p = self.obs[img].get(kp)
            if p is not None and self.alive[p]:
                self.track_point[t] = p
                return p
        return None

    def add_observation(self, pid: int, img: int, kp: int) -> bool:
        """Adds keypoint kp of image img to point pid unless the keypoint or the image is already taken -> added."""
        if kp in self.obs[img] or img in self.tracks[pid]:
            return False
        self.tracks[pid][img] = int(kp)
        self.obs[img][int(kp)] = pid
        return True

    def remove_observation(self, pid: int, img: int) -> None:
        kp = self.tracks[pid].pop(img, None)
        if kp is not None:
            self.obs[img].pop(kp, None)
        if len(self.tracks[pid]) < 2:
            self.kill(pid)

    def kill(self, pid: int) -> None:
        for img, kp in list(self.tracks[pid].items()):
            self.obs[img].pop(kp, None)
        self.tracks[pid] = {}
        self.alive[pid] = False

    def seen_from(self, pids) -> np.ndarray:
        """A registered camera centre that observes each point [P] -> [P, 3]."""
        out = np.zeros((len(pids), 3))
        for k, p in enumerate(pids):
            img = next((i for i in self.tracks[p] if i in self.poses), None)
            if img is not None:
                R, t = self.poses[img]
                out[k] = -R.T @ t
        return out

    def live_ids(self) -> np.ndarray:
        return np.nonzero(np.asarray(self.alive, bool))[0] if self.alive else np.zeros(0, np.int64)

    def observations(self, keypoints: list, images=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All observations of live points in registered images (or ``images``) -> (img [O], pid [O], uv [O, 2])."""
        keep = set(self.poses) if images is None else set(images)
        rows_i, rows_p, rows_uv = [], [], []
        for img in sorted(keep):
            for kp, pid in self.obs[img].items():
                rows_i.append(img)
                rows_p.append(pid)
                rows_uv.append(keypoints[img][kp])
        return (np.asarray(rows_i, np.int64), np.asarray(rows_p, np.int64),
                np.asarray(rows_uv, np.float64).reshape(-1, 2))

    def reprojection_errors(self, keypoints: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(img [O], pid [O], error px [O]) for every observation in a registered image."""
        img, pid, uv = self.observations(keypoints)
        err = np.zeros(len(img))
        for i in np.unique(img):
            m = img == i
            p, z = project(self.K, *self.poses[int(i)], self.points[pid[m]])
            err[m] = np.where(z > 0, np.linalg.norm(p - uv[m], axis=1), np.inf)
        return img, pid, err

    def filter_observations(self, keypoints: list, max_error: float) -> int:
        """Removes observations reprojecting worse than ``max_error`` px (points left with < 2 die) -> count."""
        img, pid, err = self.reprojection_errors(keypoints)
        bad = np.nonzero(err > max_error)[0]
        for k in bad:
            if self.alive[pid[k]]:
                self.remove_observation(int(pid[k]), int(img[k]))
        return len(bad)

    def mean_reprojection_error(self, keypoints: list) -> float:
        _, _, err = self.reprojection_errors(keypoints)
        return float(err.mean()) if len(err) else float("nan")
