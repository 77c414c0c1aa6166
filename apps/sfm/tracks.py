"""Feature tracks: connected components (union–find) of the verified pairwise matches.

A 2D feature seen in several images becomes one track, and one track becomes at most one 3D point: registration
finds 2D–3D correspondences through the whole track (not only through the pair that made the point), and
triangulating a new view extends the track's existing point instead of creating a duplicate.  Components come from
``scipy.sparse.csgraph.connected_components`` over the graph whose nodes are all keypoints of all images and whose
edges are the verified inlier matches.  A component holding two features of one image is inconsistent (a wrong
match somewhere along its chain); it is split, not dropped: only its matches that a third image confirms (a
feature matched to both ends; a random wrong match rarely has one) are joined again, one by one, the best
confirmed first, and a match that would put a second feature of an image into a track is refused (a few wrong
matches chain thousands of features into one component: dropping it whole lost every track of a scene with 15 %
random outliers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Tracks:
    """track_of: one array per image [K_i] int64 (track id of each keypoint, -1: in no kept track);
    elements: [T] {image: keypoint}; split: inconsistent components split (two features of one image);
    refused: matches left out while splitting them (unconfirmed, or joining two features of an image)."""

    track_of: list
    elements: list
    split: int = 0
    refused: int = 0

    def __len__(self) -> int:
        return len(self.elements)

    def stats(self) -> dict:
        lengths = np.array([len(e) for e in self.elements]) if self.elements else np.zeros(1)
        return {"tracks": len(self.elements), "split_inconsistent": int(self.split), "refused_matches": self.refused,
                "mean_length": round(float(lengths.mean()), 3), "max_length": int(lengths.max())}


def _greedy_union(edges: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, int]:
    """Union–find over nodes 0..n-1 (image [n]) joining edges [E, 2] in order, refusing a join that would put two
    nodes of one image into one set -> (root of each node [n], refused count)."""
    parent = list(range(len(image)))
    images = [1 << int(i) for i in image]  # bit set of the images in each root's set

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    refused = 0
    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if images[ra] & images[rb]:
            refused += 1
            continue
        parent[rb] = ra
        images[ra] |= images[rb]
    return np.array([find(x) for x in range(len(image))], np.int64), refused


def _labels(n_nodes: int, image: np.ndarray, edges: np.ndarray, strength: np.ndarray):
    """Component label of every node, inconsistent components split -> (label [n_nodes], split, refused)."""
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    n_img = int(image.max()) + 1
    uniq, counts = np.unique(label * n_img + image, return_counts=True)
    bad = np.unique(uniq[counts > 1] // n_img)
    if len(bad) == 0:
        return label, 0, 0
    nodes = np.nonzero(np.isin(label, bad))[0]
    local = np.full(n_nodes, -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    e = np.nonzero(local[edges[:, 0]] >= 0)[0]
    le = local[edges[e]]
    adj = coo_matrix((np.ones(len(le)), (le[:, 0], le[:, 1])), shape=(len(nodes),) * 2).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    common = np.asarray((adj @ adj)[le[:, 0], le[:, 1]]).ravel()  # third features matched to both ends
    order = np.lexsort((-strength[e], -common))  # best confirmed first, then the larger pairs'
    order = order[common[order] > 0]  # an unconfirmed match in an inconsistent component is left out
    root, refused = _greedy_union(le[order], image[nodes])
    refused += len(e) - len(order)
    label = label.copy()
    label[nodes] = label.max() + 1 + root
    return label, len(bad), refused


def build_tracks(n_keypoints: list, pairs: dict) -> Tracks:
    """Tracks of verified matches.

    n_keypoints: [N] keypoints per image; pairs: {(i, j): [M, 2] int (keypoint in i, keypoint in j)}.
    """
    n_img = len(n_keypoints)
    offsets = np.concatenate([[0], np.cumsum(n_keypoints)]).astype(np.int64)
    n_nodes = int(offsets[-1])
    edges, strength = [], []
    for (i, j), m in pairs.items():
        m = np.asarray(m, np.int64).reshape(-1, 2)
        edges.append(np.stack([offsets[i] + m[:, 0], offsets[j] + m[:, 1]], 1))
        strength.append(np.full(len(m), len(m)))
    track_of = [np.full(int(k), -1, np.int64) for k in n_keypoints]
    if not edges or n_nodes == 0:
        return Tracks(track_of, [])
    image = np.repeat(np.arange(n_img), np.diff(offsets))
    label, n_split, refused = _labels(n_nodes, image, np.concatenate(edges), np.concatenate(strength))
    size = np.bincount(label)
    nodes = np.nonzero(size[label] >= 2)[0]
    lab, img = label[nodes], image[nodes]
    order = np.lexsort((img, lab))
    nodes, lab, img = nodes[order], lab[order], img[order]
    new_ids = np.unique(lab, return_inverse=True)[1]
    kp = nodes - offsets[img]
    for i in range(n_img):
        m = img == i
        track_of[i][kp[m]] = new_ids[m]
    starts = np.concatenate([[0], np.nonzero(np.diff(new_ids))[0] + 1, [len(new_ids)]])
    elements = [dict(zip(img[a:b].tolist(), kp[a:b].tolist())) for a, b in zip(starts[:-1], starts[1:])]
    return Tracks(track_of, elements, n_split, refused)


def feature_tracks(matches) -> Tracks:
    """The tracks of a :class:`~.matches.Matches` (built once, cached in ``matches.extra``)."""
    tr = matches.extra.get("tracks")
    if tr is None:
        tr = build_tracks([len(k) for k in matches.keypoints], matches.pairs)
        matches.extra["tracks"] = tr
    return tr
