"""``nfkit ponder``: pretraining a 3D point-cloud encoder by differentiable rendering (after PonderV2).

* :mod:`~nfkit.apps.ponder.rooms`: procedural labelled rooms (analytic SDF union, ray cast into point clouds and
  RGB-D frames), written as safetensors + JSON.
* :mod:`~nfkit.apps.ponder.encoder`: scatter-mean voxelisation (+ loop reference), dense 3D U-Net, feature volume.
* :mod:`~nfkit.apps.ponder.render`: ConvONet-style SDF / colour / semantic decoders and NeuS volume rendering.
* :mod:`~nfkit.apps.ponder.pretrain`: the rendering objective for the shared loop (:mod:`nfkit.loop`).
* :mod:`~nfkit.apps.ponder.probe`: linear probe, few-scene fine-tune, handcrafted baseline, mIoU.
* :mod:`~nfkit.apps.ponder.lidar`: the real LiDAR arm (CGAL's b9_training.ply / urban.las).
* :mod:`~nfkit.apps.ponder.files`: encoder files (safetensors + JSON metadata).

An app only: the library never imports it.
"""
