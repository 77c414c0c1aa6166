"""Dataset readers: posed images -> :class:`SceneData` (images, cameras in normalised coordinates, bounds).

Supported layouts: Blender / NeRF-synthetic (``transforms_{train,val,test}.json``), nerfstudio / instant-ngp
(``transforms.json``), IDR / DTU / NEAT (``cameras.npz``), LLFF (``poses_bounds.npy``) and Middlebury
(``*_par.txt``).  See :func:`load_dataset`.  Data with ground truth: :mod:`nfkit.datasets.mesh_views`
(:func:`render_mesh_dataset` writes a mesh's views with masks and depth as a dataset folder).
"""
from .load import DEFAULT_MAX_SIDE, load_dataset
from .mesh_views import render_mesh_dataset
from .scene import SceneData, composite, unnormalize_points

__all__ = ["SceneData", "load_dataset", "DEFAULT_MAX_SIDE", "composite", "unnormalize_points", "render_mesh_dataset"]
