"""Cameras and ray generation, re-exported from the base module :mod:`nfkit.cameras` (where they live, so that
:mod:`nfkit.datasets` and :mod:`nfkit.renderers` share them without datasets importing the renderer)."""
from nfkit.cameras import (GL_TO_CV, Cameras, distort, image_rays, opencv_to_opengl, opengl_to_opencv, pixel_rays,
                           project, ray_aabb, undistort)

__all__ = ["GL_TO_CV", "Cameras", "distort", "undistort", "image_rays", "pixel_rays", "project", "ray_aabb",
           "opencv_to_opengl", "opengl_to_opencv"]
