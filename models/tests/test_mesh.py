"""The mesh topology beside the model (models/mesh.py) and the synthetic stand-in's triangulation."""

import json
import pickle
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from models import export, mesh
from models.loaders import load_smpl
from models.smpl import JOINT_NAMES, KEYPOINT_NAMES, NUM_FACES, NUM_VERTICES, PARENTS, synthetic_smpl

from .test_loaders import DATA, smpl_dict

FIELDS = {"version", "topology", "num_vertices", "faces", "parents", "joint_names", "keypoint_names", "source"}


def directed_edges(faces):
    return Counter((int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))


def test_synthetic_faces_are_a_valid_triangulation():
    faces = DATA.faces
    assert faces.shape == (NUM_FACES, 3) and np.issubdtype(faces.dtype, np.integer)
    assert faces.min() == 0 and faces.max() == NUM_VERTICES - 1
    assert len(np.unique(faces)) == NUM_VERTICES  # every vertex used
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all() and (faces[:, 0] != faces[:, 2]).all()
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == NUM_FACES  # no duplicates, either winding


def test_synthetic_faces_are_a_closed_oriented_sphere():
    faces = DATA.faces
    edges = directed_edges(faces)
    # Closed and consistently oriented: each directed edge once, its reverse once, so every
    # edge has exactly two faces, which traverse it in opposite directions.
    assert max(edges.values()) == 1
    assert all((b, a) in edges for a, b in edges)
    num_edges = len(edges) // 2
    assert num_edges == 3 * NUM_FACES // 2
    assert NUM_VERTICES - num_edges + NUM_FACES == 2  # Euler characteristic of a sphere
    # Manifold vertices: the faces around each vertex form a single fan (one cycle).
    ring = defaultdict(dict)
    for a, b, c in faces.tolist():
        ring[a][b] = c
        ring[b][c] = a
        ring[c][a] = b
    for v, nxt in ring.items():
        start = next(iter(nxt))
        cur, steps = nxt[start], 1
        while cur != start:
            cur, steps = nxt[cur], steps + 1
        assert steps == len(nxt), f"vertex {v} has more than one fan of faces"
    # Connected: one surface, not 24.
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
    seen, todo = {0}, [0]
    while todo:
        for w in adj[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    assert len(seen) == NUM_VERTICES


def test_synthetic_faces_are_fixed_and_match_smpl_counts():
    assert (synthetic_smpl().faces == DATA.faces).all()
    assert NUM_FACES == 2 * NUM_VERTICES - 4  # SMPL's counts are those of a closed genus-0 mesh


def test_side_file_path_replaces_the_last_extension(tmp_path):
    assert mesh.mesh_path(tmp_path / "hmr2-tiny.pt") == tmp_path / "hmr2-tiny.mesh.json"
    assert mesh.mesh_path(tmp_path / "hmr2.full.bf16.pt") == tmp_path / "hmr2.full.bf16.mesh.json"
    assert mesh.mesh_path(tmp_path / "model") == tmp_path / "model.mesh.json"


def test_tiny_export_writes_the_side_file(tmp_path, capsys):
    out = tmp_path / "hmr2-tiny.pt"
    export.main(["--preset", "tiny", "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--no-check"])
    capsys.readouterr()
    side = tmp_path / "hmr2-tiny.mesh.json"
    text = side.read_text()
    topo = json.loads(text)
    assert text == json.dumps(topo, separators=(",", ":"))  # compact
    assert set(topo) == FIELDS
    assert topo["version"] == 1 and topo["topology"] == "synthetic"
    assert "synthetic" in topo["source"]

    loaded = torch.jit.load(str(out))
    meta = json.loads(loaded.meta())
    assert topo["num_vertices"] == meta["outputs"]["vertices"][1] == NUM_VERTICES
    assert len(topo["keypoint_names"]) == meta["outputs"]["keypoints_3d"][1] == 44
    faces = np.asarray(topo["faces"])
    assert faces.shape == (NUM_FACES, 3) and faces.dtype.kind == "i"
    assert (faces == DATA.faces).all()
    assert topo["parents"] == PARENTS and topo["parents"][0] == -1
    assert topo["joint_names"] == JOINT_NAMES and len(set(topo["joint_names"])) == 24
    assert topo["keypoint_names"] == KEYPOINT_NAMES and len(set(topo["keypoint_names"])) == 44


def test_export_with_an_smpl_file_uses_its_faces(tmp_path, capsys):
    raw = smpl_dict()
    raw["f"] = DATA.faces[:, ::-1].astype(np.uint32)  # differs from the stand-in's (winding)
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    (tmp_path / "SMPL_to_J19.pkl").write_bytes(pickle.dumps(DATA.j19, protocol=2))
    out = tmp_path / "real.pt"
    export.main([
        "--preset", "tiny", "--smpl", str(tmp_path / "SMPL_NEUTRAL.pkl"), "--j19", str(tmp_path / "SMPL_to_J19.pkl"),
        "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--no-check",
    ])
    capsys.readouterr()
    topo = json.loads((tmp_path / "real.mesh.json").read_text())
    assert topo["topology"] == "smpl" and topo["source"] == "SMPL_NEUTRAL.pkl"
    assert topo["num_vertices"] == NUM_VERTICES
    assert (np.asarray(topo["faces"]) == DATA.faces[:, ::-1]).all()
    assert topo["parents"] == PARENTS


@pytest.mark.parametrize("bad", ["out_of_range", "negative", "shape"])
def test_bad_faces_are_refused(tmp_path, bad):
    raw = smpl_dict()
    f = DATA.faces.copy()
    if bad == "out_of_range":
        f[5, 1] = NUM_VERTICES
    elif bad == "negative":
        f[5, 1] = -1
    else:
        f = f[:, :2]
    raw["f"] = f
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(ValueError, match="faces"):
        load_smpl(path)
