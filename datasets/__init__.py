"""Dataset readers: posed images -> :class:`SceneData` (images, cameras in normalised coordinates, bounds).

Supported layouts: Blender / NeRF-synthetic (``transforms_{train,val,test}.json``) and nerfstudio / instant-ngp
(``transforms.json``).  See :func:`load_dataset`.
"""
from .load import load_dataset
from .scene import SceneData, composite, unnormalize_points

__all__ = ["SceneData", "load_dataset", "composite", "unnormalize_points"]
