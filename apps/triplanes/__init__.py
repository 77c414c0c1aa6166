"""``nfkit triplanes``: neural fields as data (after Cardace et al., ICLR 2024, "Neural Processing of Tri-Plane
Hybrid Neural Fields"): fit one tri-plane field per shape, in batches, then classify the fields themselves.

Modules, one job each:

* :mod:`~nfkit.apps.triplanes.procedural`: 10 procedural furniture classes named after ModelNet10.
* :mod:`~nfkit.apps.triplanes.dataset`: shape folders (procedural set, real-mesh arm under nuisance), listing,
  ground-truth occupancy samples per shape. Shape files are read by :mod:`nfkit.datasets.shape_files`.
* :mod:`~nfkit.apps.triplanes.targets`: fitting targets of shape files: occupancy (meshes) or UDF (point clouds).
* :mod:`~nfkit.apps.triplanes.bank`: the batched fit of B tri-planes with per-shape (or one shared) decoders.
* :mod:`~nfkit.apps.triplanes.shared_decoder`: a bank's shared decoder, fitted once and frozen.
* :mod:`~nfkit.apps.triplanes.shards`: a fitted dataset as resumable safetensors shards, split across workers.
* :mod:`~nfkit.apps.triplanes.classifiers`: channel-token transformer, plane CNN, weight-space MLP, PointNet.
* :mod:`~nfkit.apps.triplanes.train`: training, inference, classifier files.
* :mod:`~nfkit.apps.triplanes.cli`: ``nfkit triplanes make-shapes | fit | train | classify``.
"""
