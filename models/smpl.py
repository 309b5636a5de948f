"""The SMPL body model as HMR2.0 uses it, the 44 keypoints, and a synthetic stand-in.

Forward (betas, global_orient, body_pose as rotation matrices, no translation), in fp32:

1. ``v_shaped = v_template + shapedirs . betas``; rest joints ``J = J_regressor . v_shaped``.
2. Pose blend shapes: ``v_posed = v_shaped + posedirs . vec(R_j - I for joints 1..23)``.
3. Kinematic chain: joint j rotates by R_j about its rest position, relative to its parent;
   ``G_j = G_parent(j) [R_j | J_j - J_parent(j)]``. The 24 posed joints are ``G_j``'s translation.
4. Linear blend skinning with ``weights`` of the transforms ``G_j`` taken relative to the rest
   pose (``G_j`` with ``G_j J_j`` subtracted from its translation).
5. 45 extended joints: the 24 posed joints then 21 vertices (nose, eyes, ears, toes, heels,
   fingertips; ``VERTEX_JOINTS``). 44 keypoints: 25 of those in OpenPose BODY_25 order
   (``OPENPOSE_FROM_45``) then 19 from the J19 regressor applied to the vertices.

Units are those of the model file (metres for SMPL).
"""

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_JOINTS = 24
NUM_BETAS = 10

#: Parent of each SMPL joint (-1 for the root, the pelvis).
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]

#: Names of the 24 SMPL joints (joint 0 is ``global_orient``, 1..23 are ``body_pose``).
JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
]

#: Vertex ids of the 21 extra joints (indices 24..44 of the 45 extended joints), in this order.
VERTEX_JOINTS = [
    332, 6260, 2800, 4071, 583,  # nose, right eye, left eye, right ear, left ear
    3216, 3226, 3387,  # left big toe, left small toe, left heel
    6617, 6624, 6787,  # right big toe, right small toe, right heel
    2746, 2319, 2445, 2556, 2673,  # left thumb, index, middle, ring, pinky tips
    6191, 5782, 5905, 6016, 6133,  # right thumb, index, middle, ring, pinky tips
]

#: The 25 OpenPose BODY_25 keypoints as indices into the 45 extended joints.
OPENPOSE_FROM_45 = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]

#: Names of the 44 keypoints (``keypoints_3d`` order). The first 25 are OpenPose BODY_25; the
#: last 19 are the J19 regressor's rows, in the order of the usual ``SMPL_to_J19.pkl``.
KEYPOINT_NAMES = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe",
    "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "j19_right_ankle", "j19_right_knee", "j19_right_hip", "j19_left_hip", "j19_left_knee",
    "j19_left_ankle", "j19_right_wrist", "j19_right_elbow", "j19_right_shoulder",
    "j19_left_shoulder", "j19_left_elbow", "j19_left_wrist", "j19_neck", "j19_head_top",
    "j19_pelvis", "j19_thorax", "j19_spine", "j19_jaw", "j19_head",
]
PELVIS_KEYPOINT = 39


@dataclass
class SmplData:
    """Arrays of an SMPL model (numpy, float64 or float32) plus the J19 regressor.

    ``source`` names where they came from: ``"synthetic"`` or the SMPL file's name.
    """

    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, >=10)
    posedirs: np.ndarray  # (V, 3, 207)
    j_regressor: np.ndarray  # (24, V), dense
    weights: np.ndarray  # (V, 24)
    parents: List[int]  # 24 entries, -1 for the root
    faces: np.ndarray  # (F, 3)
    j19: np.ndarray  # (19, V), dense
    source: str = "synthetic"

    def validate(self) -> None:
        """Raise ValueError unless every array has the shape SMPL (neutral, 10 betas) needs."""
        v = self.v_template.shape[0]
        checks = {
            "v_template": (self.v_template.shape, (v, 3)),
            "posedirs": (self.posedirs.shape, (v, 3, (NUM_JOINTS - 1) * 9)),
            "J_regressor": (self.j_regressor.shape, (NUM_JOINTS, v)),
            "weights": (self.weights.shape, (v, NUM_JOINTS)),
            "J19 regressor": (self.j19.shape, (19, v)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"SMPL {name} has shape {tuple(got)}, expected {want}")
        if self.shapedirs.ndim != 3 or self.shapedirs.shape[:2] != (v, 3) or self.shapedirs.shape[2] < NUM_BETAS:
            raise ValueError(f"SMPL shapedirs has shape {self.shapedirs.shape}, expected ({v}, 3, >=10)")
        if len(self.parents) != NUM_JOINTS or self.parents[0] != -1:
            raise ValueError(f"SMPL kinematic tree {self.parents} is not 24 joints rooted at 0")
        if any(not 0 <= p < j for j, p in enumerate(self.parents[1:], start=1)):
            raise ValueError(f"SMPL kinematic tree {self.parents}: a parent must precede its child")
        faces = np.asarray(self.faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise ValueError(f"SMPL faces have shape {faces.shape}, expected (F, 3)")
        if not np.issubdtype(faces.dtype, np.integer) or faces.min() < 0 or faces.max() >= v:
            raise ValueError(f"SMPL faces must be integer vertex indices in 0..{v - 1}")
        if v <= max(VERTEX_JOINTS):
            raise ValueError(f"SMPL has {v} vertices, the keypoints need {max(VERTEX_JOINTS) + 1}")


# Rest joint positions (metres, SMPL frame: x to the body's left, y up, z forward) for the
# synthetic model: a plausible T-pose, not SMPL's.
_SYNTHETIC_JOINTS = [
    (0.0, 0.0, 0.0), (0.06, -0.09, 0.0), (-0.06, -0.09, 0.0), (0.0, 0.11, -0.02),
    (0.1, -0.47, 0.0), (-0.1, -0.47, 0.0), (0.0, 0.24, 0.0), (0.09, -0.87, -0.04),
    (-0.09, -0.87, -0.04), (0.0, 0.3, 0.02), (0.11, -0.93, 0.08), (-0.11, -0.93, 0.08),
    (0.0, 0.51, -0.02), (0.08, 0.42, -0.01), (-0.08, 0.42, -0.01), (0.0, 0.6, 0.03),
    (0.19, 0.45, -0.02), (-0.19, 0.45, -0.02), (0.45, 0.43, -0.04), (-0.45, 0.43, -0.04),
    (0.7, 0.44, -0.03), (-0.7, 0.44, -0.03), (0.78, 0.44, -0.04), (-0.78, 0.44, -0.04),
]


def _sphere_faces(directions: np.ndarray) -> np.ndarray:
    """Faces (local indices, outward winding) of the convex hull of ``directions`` (N, 3) taken
    as unit vectors: a closed genus-0 triangulation with every point a vertex, 2N - 4 faces."""
    from scipy.spatial import ConvexHull

    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    hull = ConvexHull(unit)
    faces = np.array(hull.simplices, dtype=np.int64)
    if len(hull.vertices) != len(unit) or len(faces) != 2 * len(unit) - 4:
        raise RuntimeError("synthetic SMPL: a body part's points are not in general position")
    a, b, c = (unit[faces[:, i]] for i in range(3))
    inward = np.einsum("fc,fc->f", np.cross(b - a, c - a), hull.equations[:, :3]) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return faces


def _synthetic_faces(v_template: np.ndarray, owner: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """A closed, consistently oriented genus-0 triangulation of the synthetic vertices, which
    has exactly SMPL's face count (F = 2V - 4 = 13776 for V = 6890).

    Each joint's vertices (a blob around the joint) are triangulated as a sphere: the convex hull
    of their directions from the joint (2n - 4 faces for n vertices). Then every child blob is
    joined to its parent's blob along the kinematic tree by a triangular tube: one face facing the
    other joint is removed from each blob and the two holes are stitched with 6 faces (+4 faces
    per joint, 23 joints). 24 spheres joined by 23 tubes are one sphere: 2V - 96 + 92 = 2V - 4.
    """
    num_joints = len(joints)
    parts = [np.flatnonzero(owner == j) for j in range(num_joints)]
    blobs = [part[_sphere_faces(v_template[part] - joints[j])] for j, part in enumerate(parts)]
    removed = [np.zeros(len(b), dtype=bool) for b in blobs]
    blocked = np.zeros(len(v_template), dtype=bool)  # vertices of removed faces (holes stay apart)

    def open_hole(joint: int, toward: np.ndarray) -> np.ndarray:
        faces = blobs[joint]
        centre = v_template[faces].mean(axis=1) - joints[joint]
        score = centre @ (toward - joints[joint]) / np.linalg.norm(centre, axis=1)
        score[removed[joint] | blocked[faces].any(axis=1)] = -np.inf
        best = int(np.argmax(score))
        removed[joint][best] = True
        blocked[faces[best]] = True
        return faces[best]

    tubes = []
    for child in range(1, num_joints):
        parent = PARENTS[child]
        a = open_hole(child, joints[parent])
        b = open_hole(parent, joints[child])
        # The holes face each other, so b runs the other way round: pair a[i] with b[(s - i) % 3],
        # the shift s that gives the shortest tube.
        s = min(range(3), key=lambda s: sum(np.linalg.norm(v_template[a[i]] - v_template[b[(s - i) % 3]]) for i in range(3)))
        for i in range(3):
            p, q = b[(s - i) % 3], b[(s - i - 1) % 3]
            tubes += [(a[i], a[(i + 1) % 3], q), (a[i], q, p)]
    faces = np.concatenate([f[~r] for f, r in zip(blobs, removed)] + [np.array(tubes, dtype=np.int64)])
    # Canonical order: each face starts at its smallest index (winding kept), rows sorted.
    first = np.argmin(faces, axis=1)
    faces = np.stack([faces[np.arange(len(faces)), (first + k) % 3] for k in range(3)], axis=1)
    return faces[np.lexsort(faces.T[::-1])]


def synthetic_smpl(seed: int = 0) -> SmplData:
    """An SMPL-shaped model with random contents (fixed seed): 6890 vertices scattered around a
    T-pose skeleton with the real kinematic tree, a triangulation of its own with SMPL's 13776
    faces (closed, genus 0; see :func:`_synthetic_faces`), random shape (std 1 cm) and pose
    (std 1 mm) blend shapes, skinning weights 0.8 own joint / 0.2 parent, a J_regressor that
    averages each joint's vertices, and a J19 regressor averaging 4 random vertices per row."""
    rng = np.random.default_rng(seed)
    v, j = NUM_VERTICES, NUM_JOINTS
    joints = np.asarray(_SYNTHETIC_JOINTS, dtype=np.float64)
    owner = np.arange(v) % j
    v_template = joints[owner] + rng.normal(0.0, 0.04, (v, 3))
    weights = np.zeros((v, j))
    weights[np.arange(v), owner] = 1.0
    for joint in range(1, j):
        sel = owner == joint
        weights[sel, joint] = 0.8
        weights[sel, PARENTS[joint]] = 0.2
    j_regressor = np.zeros((j, v))
    for joint in range(j):
        sel = owner == joint
        j_regressor[joint, sel] = 1.0 / sel.sum()
    j19 = np.zeros((19, v))
    for row in range(19):
        j19[row, rng.choice(v, 4, replace=False)] = 0.25
    return SmplData(
        v_template=v_template,
        shapedirs=rng.normal(0.0, 0.01, (v, 3, NUM_BETAS)),
        posedirs=rng.normal(0.0, 0.001, (v, 3, (j - 1) * 9)),
        j_regressor=j_regressor,
        weights=weights,
        parents=list(PARENTS),
        faces=_synthetic_faces(v_template, owner, joints),
        j19=j19,
        source="synthetic",
    )


class SMPL(nn.Module):
    """SMPL layer: (betas (B,10), global_orient (B,1,3,3), body_pose (B,23,3,3)) ->
    (vertices (B,V,3), keypoints (B,44,3)), always computed in fp32."""

    parents: List[int]

    def __init__(self, data: SmplData):
        super().__init__()
        data.validate()

        def f32(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

        v = data.v_template.shape[0]
        self.register_buffer("v_template", f32(data.v_template))
        self.register_buffer("shapedirs", f32(data.shapedirs[:, :, :NUM_BETAS]))
        # (207, V*3): row k is the offset for pose feature k = 9*(joint-1) + 3*row + col.
        self.register_buffer("posedirs", f32(data.posedirs.reshape(v * 3, -1).T))
        self.register_buffer("J_regressor", f32(data.j_regressor))
        self.register_buffer("lbs_weights", f32(data.weights))
        self.register_buffer("J_regressor_extra", f32(data.j19))
        self.register_buffer("parent_index", torch.tensor(data.parents[1:], dtype=torch.long))
        self.register_buffer("vertex_joints", torch.tensor(VERTEX_JOINTS, dtype=torch.long))
        self.register_buffer("openpose_joints", torch.tensor(OPENPOSE_FROM_45, dtype=torch.long))
        self.parents = list(data.parents)

    def forward(self, betas: Tensor, global_orient: Tensor, body_pose: Tensor) -> Tuple[Tensor, Tensor]:
        b = betas.shape[0]
        v_shaped = self.v_template + torch.einsum("bl,vcl->bvc", betas, self.shapedirs)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        rot = torch.cat([global_orient, body_pose], dim=1)  # (B, 24, 3, 3)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).reshape(b, -1, 3)

        # Local transforms [R_j | J_j - J_parent], chained from the root.
        rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, self.parent_index]], dim=1)
        local = torch.cat([rot, rel.unsqueeze(-1)], dim=-1)  # (B, 24, 3, 4)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype, device=rot.device)
        local = torch.cat([local, bottom.expand(b, local.shape[1], 1, 4)], dim=-2)  # (B, 24, 4, 4)
        chain: List[Tensor] = [local[:, 0]]
        for j in range(1, len(self.parents)):
            chain.append(torch.matmul(chain[self.parents[j]], local[:, j]))
        world = torch.stack(chain, dim=1)
        posed_joints = world[:, :, :3, 3]

        # Skinning transforms: world transforms relative to the rest pose.
        rest_offset = torch.einsum("bjrc,bjc->bjr", world[:, :, :3, :3], joints)
        skin = torch.cat([world[:, :, :3, :3], (posed_joints - rest_offset).unsqueeze(-1)], dim=-1)
        per_vertex = torch.matmul(self.lbs_weights, skin.reshape(b, skin.shape[1], 12)).reshape(b, -1, 3, 4)
        vertices = torch.einsum("bvrc,bvc->bvr", per_vertex[..., :3], v_posed) + per_vertex[..., 3]

        extended = torch.cat([posed_joints, vertices[:, self.vertex_joints]], dim=1)  # (B, 45, 3)
        j19 = torch.einsum("jv,bvc->bjc", self.J_regressor_extra, vertices)
        keypoints = torch.cat([extended[:, self.openpose_joints], j19], dim=1)
        return vertices, keypoints

