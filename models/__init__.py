"""HMR2.0 for the hmr2-worker fleet: an independent PyTorch implementation and its exporter.

The worker runs a TorchScript file; this package makes it. Layout:

- ``vit``       the ViT-H/16 backbone (256x192 input, ViTPose style)
- ``head``      the transformer-decoder SMPL head and the 6D -> rotation-matrix conversion
- ``smpl``      the SMPL layer, the 44 keypoints and a synthetic SMPL of the real shape
- ``loaders``   readers for the official checkpoint, mean parameters, SMPL and J19 pickles
- ``hmr2``      the whole model (uint8 crops in, fp32 SMPL outputs out), presets, ``meta()``
- ``manifest``  the official checkpoint's backbone/head keys and shapes (``manifest_full.json``)
- ``export``    ``python -m models.export``: builds, loads, scripts and saves the model, and writes
  the mesh topology beside it (``mesh``)
- ``mesh``      the ``<model>.mesh.json`` side file: faces, kinematic tree, keypoint names
- ``detector``  the person-detector contract (``person-detector/1``): letterbox, NMS, wrapper
- ``tiny_detector``, ``train_detector``  the small detector of the demo's figures and its training
- ``yolo``, ``export_detector``  ``python -m models.export_detector``: Ultralytics YOLO to the contract
- ``rtdetr``    RT-DETR (Hugging Face transformers) to the contract, NMS-free (``--arch rtdetr``)
- ``bad_detector`` test-only detector files that break the contract in one way each
- ``oom_model`` ``python -m models.oom_model``: a test model that simulates CUDA OOM
- ``crop``      the reference person crop (box -> 256x256 uint8), ``python -m models.crop``

The ``state_dict`` keys and shapes under ``backbone.*`` and ``smpl_head.*`` are those of the
official HMR2.0 checkpoint, so its weights load with ``strict=True`` for those parts.
"""

__version__ = "0.1.0"
