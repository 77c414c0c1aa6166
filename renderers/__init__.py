"""The shared volumetric renderer: cameras and rays, occupancy-grid sampling, compositing."""
from nfkit.fields.base import require_kind
from nfkit.renderers.cameras import Cameras, image_rays, opencv_to_opengl, opengl_to_opencv, pixel_rays, ray_aabb
from nfkit.renderers.compositing import composite_batched, composite_packed, weights_from_alpha, weights_from_density
from nfkit.renderers.loading import camera_from_pose, load_renderable
from nfkit.renderers.occupancy import OccupancyGrid
from nfkit.renderers.density_cache import DensityCache
from nfkit.renderers.render import RenderOptions, default_step_size, preview_options, render_image, render_rays
from nfkit.renderers.sampling import march, march_reference, uniform_samples
from nfkit.renderers.sdf import neus_alpha, render_rays_sdf, sdf_occupancy_fn
from nfkit.renderers.surface import (implicit_depth, newton_project, newton_project_field, newton_project_reference,
                                     sphere_trace, sphere_trace_field, sphere_trace_reference)
from nfkit.renderers.view_density import occupancy_density_fn

__all__ = [
    "Cameras", "image_rays", "pixel_rays", "ray_aabb", "opencv_to_opengl", "opengl_to_opencv",
    "composite_packed", "composite_batched", "weights_from_density", "weights_from_alpha",
    "OccupancyGrid", "RenderOptions", "default_step_size", "render_rays", "render_image",
    "march", "march_reference", "require_kind", "occupancy_density_fn",
    "render_rays_sdf", "sdf_occupancy_fn", "neus_alpha", "uniform_samples", "load_renderable", "camera_from_pose",
    "DensityCache", "preview_options", "sphere_trace", "sphere_trace_reference", "sphere_trace_field",
    "implicit_depth", "newton_project", "newton_project_reference", "newton_project_field",
]
