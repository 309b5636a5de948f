"""The SMPL layer and the 44 keypoints."""

import math

import torch

from models.smpl import KEYPOINT_NAMES, NUM_FACES, NUM_VERTICES, PARENTS, PELVIS_KEYPOINT, SMPL, synthetic_smpl

DATA = synthetic_smpl()
LAYER = SMPL(DATA)


def rest(batch: int):
    eye = torch.eye(3)
    return torch.zeros(batch, 10), eye.expand(batch, 1, 3, 3), eye.expand(batch, 23, 3, 3)


def test_synthetic_model_has_the_real_shape():
    assert DATA.v_template.shape == (NUM_VERTICES, 3)
    assert DATA.faces.shape == (NUM_FACES, 3)
    assert DATA.parents == PARENTS
    assert DATA.source == "synthetic"
    again = synthetic_smpl()
    assert (again.v_template == DATA.v_template).all()  # fixed seed


def test_zero_pose_and_shape_reproduce_the_template():
    vertices, keypoints = LAYER(*rest(2))
    template = torch.as_tensor(DATA.v_template, dtype=torch.float32)
    assert vertices.shape == (2, NUM_VERTICES, 3) and keypoints.shape == (2, 44, 3)
    assert (vertices - template).abs().max() < 1e-6


def test_betas_move_the_rest_shape_by_the_shape_blend_shapes():
    betas, go, bp = rest(1)
    betas[0, 3] = 2.0
    vertices, _ = LAYER(betas, go, bp)
    expect = DATA.v_template + 2.0 * DATA.shapedirs[:, :, 3]
    assert (vertices[0] - torch.as_tensor(expect, dtype=torch.float32)).abs().max() < 1e-6


def test_global_orient_rotates_the_body_about_the_root_joint():
    betas, _, bp = rest(1)
    c, s = math.cos(0.9), math.sin(0.9)
    r = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    vertices, _ = LAYER(betas, r.reshape(1, 1, 3, 3), bp)
    template = torch.as_tensor(DATA.v_template, dtype=torch.float32)
    root = torch.as_tensor(DATA.j_regressor[0] @ DATA.v_template, dtype=torch.float32)
    expect = (template - root) @ r.T + root
    assert (vertices[0] - expect).abs().max() < 1e-5


def test_keypoints_are_openpose_joints_then_j19():
    g = torch.Generator().manual_seed(0)
    from models.head import rot6d_to_rotmat

    rot = rot6d_to_rotmat(torch.randn(2, 24, 6, generator=g) * 0.3 + torch.tensor([1.0, 0, 0, 0, 1, 0]))
    betas = torch.randn(2, 10, generator=g)
    vertices, keypoints = LAYER(betas, rot[:, :1], rot[:, 1:])
    assert torch.equal(keypoints[:, 0], vertices[:, 332])  # nose
    assert torch.equal(keypoints[:, 24], vertices[:, 6787])  # right heel
    # mid hip = posed pelvis = rest pelvis (the root joint does not move without translation)
    v_shaped = LAYER.v_template + torch.einsum("bl,vcl->bvc", betas, LAYER.shapedirs)
    pelvis = torch.einsum("v,bvc->bc", LAYER.J_regressor[0], v_shaped)
    assert (keypoints[:, 8] - pelvis).abs().max() < 1e-5
    j19 = torch.einsum("jv,bvc->bjc", LAYER.J_regressor_extra, vertices)
    assert torch.equal(keypoints[:, 25:], j19)
    assert len(KEYPOINT_NAMES) == 44 and KEYPOINT_NAMES[PELVIS_KEYPOINT] == "j19_pelvis"


def test_smpl_scripts():
    scripted = torch.jit.script(LAYER)
    args = rest(1)
    assert torch.equal(scripted(*args)[0], LAYER(*args)[0])


def test_keypoint_names_agree_with_the_joint_names():
    from models.smpl import JOINT_NAMES, OPENPOSE_FROM_45

    assert len(JOINT_NAMES) == 24
    for name, joint in zip(KEYPOINT_NAMES[:25], OPENPOSE_FROM_45):
        if joint < 24:
            assert JOINT_NAMES[joint] == {"mid_hip": "pelvis"}.get(name, name)
