"""The mesh topology written beside an exported model: ``<model>.mesh.json``.

The model file outputs vertices only; the faces, the kinematic tree and the keypoint names are
static, so the exporter writes them once into a side file and the worker publishes them at
start-up (Redis hash ``{prefix}:model``), which is all a renderer needs besides the results.

The file (compact JSON, one object)::

    {"version": 1, "topology": "smpl" | "synthetic", "num_vertices": 6890,
     "faces": [[i, j, k], ...], "parents": [...24], "joint_names": [...24],
     "keypoint_names": [...44], "source": "..."}

``faces`` are 0-based vertex indices (SMPL: 13776 rows, the licensed file's ``f``; the synthetic
stand-in: a triangulation of its own with the same count). ``parents`` has -1 for the root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np

from .smpl import JOINT_NAMES, KEYPOINT_NAMES, NUM_JOINTS, SmplData

VERSION = 1
SUFFIX = ".mesh.json"
SYNTHETIC_SOURCE = "synthetic stand-in (models.smpl.synthetic_smpl; not SMPL's topology)"


def mesh_path(model_path: str | os.PathLike) -> Path:
    """The side file of ``model_path``: its last extension replaced by ``.mesh.json``
    (``hmr2-tiny.pt`` -> ``hmr2-tiny.mesh.json``), as the worker looks for it."""
    path = Path(model_path)
    return path.with_name(path.stem + SUFFIX)


def topology(data: SmplData) -> Dict[str, Any]:
    """The side file's object for the SMPL arrays ``data`` (checked: faces (F, 3) of indices in
    range, 24 parents, names of the right counts)."""
    num_vertices = int(data.v_template.shape[0])
    faces = np.asarray(data.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"SMPL faces have shape {faces.shape}, expected (F, 3)")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"SMPL faces are {faces.dtype}, expected integers")
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise ValueError(f"SMPL faces index vertices {faces.min()}..{faces.max()}, the model has {num_vertices}")
    if len(data.parents) != NUM_JOINTS:
        raise ValueError(f"SMPL kinematic tree has {len(data.parents)} joints, expected {NUM_JOINTS}")
    synthetic = data.source == "synthetic"
    return {
        "version": VERSION,
        "topology": "synthetic" if synthetic else "smpl",
        "num_vertices": num_vertices,
        "faces": faces.astype(np.int64).tolist(),
        "parents": [int(p) for p in data.parents],
        "joint_names": list(JOINT_NAMES),
        "keypoint_names": list(KEYPOINT_NAMES),
        "source": SYNTHETIC_SOURCE if synthetic else data.source,
    }


def write(path: str | os.PathLike, topo: Dict[str, Any]) -> Path:
    """Write ``topo`` (from :func:`topology`) to ``path`` as compact JSON, atomically (a
    temporary file, renamed)."""
    path = Path(path)
    text = json.dumps(topo, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
