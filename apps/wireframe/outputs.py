"""Wireframe files: ``wireframe.ply`` (an ASCII PLY line set: ``vertex`` x/y/z and ``edge`` vertex1/vertex2, as
open3d's LineSet reader and trimesh read it) and ``wireframe.json`` (``{"junctions": [[x, y, z], ...], "lines":
[[i, j], ...], "views": [...]}``, the ground truth's layout), both written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nfkit.atomic import atomic_path, write_json_atomic


def write_ply_lines(path, vertices: np.ndarray, edges: np.ndarray) -> Path:
    vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    head = ["ply", "format ascii 1.0", "comment nfkit wireframe", f"element vertex {len(vertices)}",
            "property float x", "property float y", "property float z", f"element edge {len(edges)}",
            "property int vertex1", "property int vertex2", "end_header"]
    body = [f"{x:.7g} {y:.7g} {z:.7g}" for x, y, z in vertices] + [f"{a} {b}" for a, b in edges]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(head + body) + "\n")
    return Path(path)


def write_wireframe(out_dir, junctions: np.ndarray, edges: np.ndarray, views=None) -> None:
    """``out_dir/wireframe.ply`` and ``out_dir/wireframe.json`` (junctions in input coordinates)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_ply_lines(out / "wireframe.ply", junctions, edges)
    obj = {"junctions": np.asarray(junctions, float).round(7).tolist(),
           "lines": np.asarray(edges, int).tolist()}
    if views is not None:
        obj["views"] = np.asarray(views, int).tolist()
    write_json_atomic(out / "wireframe.json", obj)


def read_wireframe(path) -> tuple[np.ndarray, np.ndarray]:
    d = json.loads(Path(path).read_text())
    return np.asarray(d["junctions"], float).reshape(-1, 3), np.asarray(d["lines"], int).reshape(-1, 2)
