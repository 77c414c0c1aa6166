"""``nfkit wireframe``: 3D wireframes from per-view 2D line segments by a neural attraction field (after NEAT,
CVPR 2024). App only: the library never imports it.

Modules, one job each:

* :mod:`.lines2d`: 2-D segments per view (HAWP JSON reader, OpenCV LSD + endpoint clustering), point-to-segment
  distances (vectorised torch, with a loop reference), support pixels;
* :mod:`.oracle`: known 3-D edges projected into views, clipped by ray casting (tests), and a HAWP JSON writer;
* :mod:`.model`: the attraction head, the junction latents + decoder, the line renderer (detached weights);
* :mod:`.objective`: :class:`~.objective.WireframeObjective` for the shared loop (:mod:`nfkit.loop`);
* :mod:`.extract`: junction snapping, per-view segments, voting, visibility check;
* :mod:`.matching`, :mod:`.evaluate`: Hungarian matching, the ABC protocol, held-out reprojection scores;
* :mod:`.classic`: the classic baseline (epipolar matching + triangulation + merging);
* :mod:`.config`, :mod:`.pipeline`, :mod:`.outputs`, :mod:`.cli`: the command and its files.
"""
