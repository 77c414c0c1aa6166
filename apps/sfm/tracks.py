"""Feature tracks: connected components (union–find) of the verified pairwise matches.

A 2D feature seen in several images becomes one track, and one track becomes at most one 3D point: registration
finds 2D–3D correspondences through the whole track (not only through the pair that made the point), and
triangulating a new view extends the track's existing point instead of creating a duplicate.  A track holding two
features of one image is inconsistent (a wrong match somewhere along its chain) and is dropped whole.
Components come from ``scipy.sparse.csgraph.connected_components`` over the graph whose nodes are all keypoints
of all images and whose edges are the verified inlier matches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Tracks:
    """track_of: one array per image [K_i] int64 (track id of each keypoint, -1: in no kept track);
    elements: [T] {image: keypoint}; dropped: inconsistent tracks removed (two features of one image)."""

    track_of: list
    elements: list
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.elements)

    def stats(self) -> dict:
        lengths = np.array([len(e) for e in self.elements]) if self.elements else np.zeros(1)
        return {"tracks": len(self.elements), "dropped_inconsistent": int(self.dropped),
                "mean_length": round(float(lengths.mean()), 3), "max_length": int(lengths.max())}


def build_tracks(n_keypoints: list, pairs: dict) -> Tracks:
    """Tracks of verified matches.

    n_keypoints: [N] keypoints per image; pairs: {(i, j): [M, 2] int (keypoint in i, keypoint in j)}.
    """
    n_img = len(n_keypoints)
    offsets = np.concatenate([[0], np.cumsum(n_keypoints)]).astype(np.int64)
    n_nodes = int(offsets[-1])
    rows, cols = [], []
    for (i, j), m in pairs.items():
        m = np.asarray(m, np.int64).reshape(-1, 2)
        rows.append(offsets[i] + m[:, 0])
        cols.append(offsets[j] + m[:, 1])
    track_of = [np.full(int(k), -1, np.int64) for k in n_keypoints]
    if not rows or n_nodes == 0:
        return Tracks(track_of, [], 0)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    image = np.repeat(np.arange(n_img), np.diff(offsets))
    size = np.bincount(label)
    nodes = np.nonzero(size[label] >= 2)[0]
    lab, img = label[nodes], image[nodes]
    key = lab * n_img + img
    uniq, counts = np.unique(key, return_counts=True)
    bad = np.unique(uniq[counts > 1] // n_img)
    keep = ~np.isin(lab, bad)
    nodes, lab, img = nodes[keep], lab[keep], img[keep]
    order = np.lexsort((img, lab))
    nodes, lab, img = nodes[order], lab[order], img[order]
    new_ids = np.unique(lab, return_inverse=True)[1]
    kp = nodes - offsets[img]
    for i in range(n_img):
        m = img == i
        track_of[i][kp[m]] = new_ids[m]
    starts = np.concatenate([[0], np.nonzero(np.diff(new_ids))[0] + 1, [len(new_ids)]])
    elements = [dict(zip(img[a:b].tolist(), kp[a:b].tolist())) for a, b in zip(starts[:-1], starts[1:])]
    return Tracks(track_of, elements, len(bad))


def feature_tracks(matches) -> Tracks:
    """The tracks of a :class:`~.matches.Matches` (built once, cached in ``matches.extra``)."""
    tr = matches.extra.get("tracks")
    if tr is None:
        tr = build_tracks([len(k) for k in matches.keypoints], matches.pairs)
        matches.extra["tracks"] = tr
    return tr
