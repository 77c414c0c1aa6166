"""Converting fields between families: Progressive Volume Distillation (:mod:`nfkit.distill.pvd`), sampling
(:mod:`nfkit.distill.sampling`) and the file-to-file conversion behind ``nfkit convert``
(:mod:`nfkit.distill.convert`)."""
from nfkit.distill.convert import RADIANCE_FAMILIES, convert_file, student_config
from nfkit.distill.pvd import DistillConfig, Distiller, copy_color_head

__all__ = ["DistillConfig", "Distiller", "copy_color_head", "convert_file", "student_config", "RADIANCE_FAMILIES"]
