"""First hits of rays on a triangle mesh: one function, :func:`cast_rays`, over three interchangeable backends.

Backends (:data:`BACKENDS`), all returning the same thing (tests compare them):

* ``"open3d"``: open3d's ``RaycastingScene`` (Embree inside; the fast path when open3d imports);
* ``"embree"``: trimesh's Embree intersector (needs ``embreex``);
* ``"trimesh"``: trimesh's pure-numpy intersector, the reference (slow: keep it for small meshes and tests).

``"auto"`` takes the first that is available, in that order (:func:`resolved_backend`).  All work in float64
input and float32 inside (open3d and Embree compute in single precision).
"""
from __future__ import annotations

import numpy as np

from nfkit.errors import NfkitError

BACKENDS = ("auto", "open3d", "embree", "trimesh")


def _has_embree() -> bool:
    try:
        import embreex  # noqa: F401
    except ImportError:
        return False
    return True


def _open3d():
    from nfkit.cleanup import open3d_module

    return open3d_module()


def available_backends() -> tuple[str, ...]:
    """The concrete backends that work on this machine (``"trimesh"`` always, once trimesh is installed)."""
    out = []
    if _open3d() is not None:
        out.append("open3d")
    if _has_embree():
        out.append("embree")
    return tuple(out) + ("trimesh",)


def resolved_backend(backend: str = "auto") -> str:
    """The concrete backend ``backend`` names on this machine; NfkitError for unknown or unavailable ones."""
    if backend not in BACKENDS:
        raise NfkitError(f"ray casting backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    have = available_backends()
    if backend == "auto":
        return have[0]
    if backend not in have:
        raise NfkitError(f"ray casting backend {backend!r} is not available here (available: {', '.join(have)})")
    return backend


def cast_rays(mesh, rays_o: np.ndarray, rays_d: np.ndarray, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """First hit of each ray on ``mesh`` (a ``trimesh.Trimesh``).

    rays_o, rays_d: [R, 3] (``rays_d`` unit length).  Returns ``t`` [R] float64, the distance to the hit (``inf``
    on a miss), and ``face`` [R] int64, the index of the face hit (-1 on a miss).
    """
    rays_o = np.ascontiguousarray(rays_o, dtype=np.float64)
    rays_d = np.ascontiguousarray(rays_d, dtype=np.float64)
    name = resolved_backend(backend)
    t = np.full(len(rays_o), np.inf)
    face = np.full(len(rays_o), -1, dtype=np.int64)
    if len(rays_o) == 0:
        return t, face
    if name == "open3d":
        return _cast_open3d(mesh, rays_o, rays_d)
    if name == "embree":
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    else:
        from trimesh.ray.ray_triangle import RayMeshIntersector
    tri, ray, loc = RayMeshIntersector(mesh).intersects_id(rays_o, rays_d, multiple_hits=False,
                                                           return_locations=True)
    if name == "trimesh" and len(ray):  # the numpy intersector may return several hits per ray: keep the nearest
        dist = np.einsum("ij,ij->i", loc - rays_o[ray], rays_d[ray])
        order = np.lexsort((dist, ray))
        ray, tri, dist = ray[order], tri[order], dist[order]
        first = np.concatenate([[True], ray[1:] != ray[:-1]])
        ray, tri, loc = ray[first], tri[first], rays_o[ray[first]] + dist[first, None] * rays_d[ray[first]]
    t[ray] = np.einsum("ij,ij->i", loc - rays_o[ray], rays_d[ray])
    face[ray] = tri
    return t, face


def _cast_open3d(mesh, rays_o: np.ndarray, rays_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o3d = _open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    rays = o3d.core.Tensor(np.concatenate([rays_o, rays_d], 1).astype(np.float32))
    ans = scene.cast_rays(rays)
    t = ans["t_hit"].numpy().astype(np.float64)
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    miss = ~np.isfinite(t) | (prim == o3d.t.geometry.RaycastingScene.INVALID_ID)
    t[miss], prim[miss] = np.inf, -1
    return t, prim
