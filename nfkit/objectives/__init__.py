"""Training objectives for the shared loop (:mod:`nfkit.loop`): what is learned, as named loss terms.

* :class:`RadianceObjective`: a density field against posed images (``nfkit fit``).
* :class:`SurfaceObjective`: an SDF field against posed images: colour + eikonal + mask (+ curvature) terms
  (``nfkit fit --field neus``).
* :class:`RegressionObjective` / :func:`fit_points`: a coordinate field against targets at points
  (``fit-image``, ``fit-sdf``, ``bench/fields.py``).
* the distillation objective of ``nfkit convert`` lives with PVD: :class:`nfkit.distill.pvd.DistillObjective`.
"""
from nfkit.objectives.radiance import RadianceObjective
from nfkit.objectives.regression import RegressionObjective, fit_points
from nfkit.objectives.surface import SurfaceObjective

__all__ = ["RadianceObjective", "RegressionObjective", "SurfaceObjective", "fit_points"]
