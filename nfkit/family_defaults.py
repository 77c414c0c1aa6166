"""Per-family training defaults, in one table: ``nfkit fit``'s base learning rate and where its decay ends, and
``nfkit convert``'s base rate for a student of the family. The trainer, the distiller and the apps read them here
(:func:`family_defaults`); a family not in the table gets :data:`DEFAULT`.

Measurements behind the figures (bench/NOTES.md):

* ``fit_lr``: times to 29.78 dB on lego/100 from scratch (4096 samples a step, 150 s schedule, 2 cores): the rbf
  field 71.5-89.4 s at 1e-2, 49.5-57.0 s at 2e-2 and 4e-2, 57.0-65.5 s at 8e-2; tri-plane 32.6-37.5 s at 1e-2 and
  4e-2, 28.3-32.6 s at 2e-2 (80 s schedule). The wide mlp is the same at 5e-3 and 1e-2; cam is better at 1e-2 (28.7
  against 27.0 dB after 300 s); the hash grid was tuned at 1e-2.
* ``fit_lr_final`` ("Learning-rate decay"): a short CPU run is a few hundred steps, and decaying to 3 % spent most of
  them at a rate too small to learn: at 30 % the hash grid reaches 29.98 dB on lego/100 in 60 s instead of 27.64 dB,
  the tri-plane 29.41 instead of 27.25 dB, the rbf field 29.46 instead of 25.6 dB in 90 s. The wide mlp and cam
  networks of bench/convert.py stalled below its target at 30 % (cam 29.39 dB after 640 s; at 3 % it got there in
  119-160 s), so they keep 3 %.
* ``distill_lr`` (lego/100, hash grid teacher, 2 cores): 256 x 3 mlp students 29.6 dB after 120 s at 5e-3 (a 128 x 4
  at 1e-2: 29.3 dB; a 256 x 4 at 3e-3: 26.4 dB after 60 s). Tri-plane students reached the teacher - 0.5 dB in ~21 s
  at 2e-2 against ~25 s at 3e-2 and 1e-2. rbf students (20 s runs, 2048 samples a step): 8.8-11.0 s to the teacher -
  0.5 dB at 4e-2, 11.0-13.7 s at 2e-2 and 8e-2, 12.2-15.3 s at 1e-2 (40 s run).
* ``neus`` (the hash-grid SDF of ``nfkit fit --field neus``): the rate instant-nsr-pl and NeuS2 use for their
  hash-grid SDFs (1e-2) with the grids' decay to 30 %, and ``fit_samples`` 2^14 a step, a quarter of the density
  fields' budget, because every sample also pays for the SDF's gradient (six more geometry evaluations by finite
  differences, fields/sdf.py) and the eikonal points. Not yet tuned by measurement: on the 16-pixel sphere of the
  tests, 150 steps at 4096 samples reach 31.7 dB held out and a watertight mesh within 0.03 of the radius.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyDefaults:
    fit_lr: float = 1e-2  # nfkit fit's base learning rate (FitConfig.lr 0)
    fit_lr_final: float = 0.3  # where nfkit fit's decay ends, as a fraction of fit_lr (FitConfig.lr_final 0)
    distill_lr: float = 2e-2  # nfkit convert's base rate for a student of this family (DistillConfig.lr None)
    fit_samples: int = 0  # nfkit fit's samples per step when FitConfig.samples_per_step is 0; 0: DEFAULT_FIT_SAMPLES


DEFAULT = FamilyDefaults()
DEFAULT_FIT_SAMPLES = 1 << 16

TABLE: dict[str, FamilyDefaults] = {
    "rbf": FamilyDefaults(fit_lr=4e-2, distill_lr=4e-2),
    "triplane": FamilyDefaults(fit_lr=2e-2),
    "mlp": FamilyDefaults(fit_lr_final=0.03, distill_lr=5e-3),
    "cam": FamilyDefaults(fit_lr_final=0.03, distill_lr=5e-3),
    "neus": FamilyDefaults(fit_lr=1e-2, fit_lr_final=0.3, fit_samples=1 << 14),
}


def family_defaults(family: str) -> FamilyDefaults:
    """The training defaults of ``family`` (:data:`DEFAULT` for a family not in :data:`TABLE`)."""
    return TABLE.get(family, DEFAULT)
