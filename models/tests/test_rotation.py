"""6D -> rotation matrix."""

import math

import torch

from models.head import default_mean_params, rot6d_to_rotmat


def test_random_6d_gives_proper_rotations():
    x = torch.randn(1000, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = rot6d_to_rotmat(x)
    eye = torch.eye(3, dtype=torch.float64).expand(1000, 3, 3)
    assert torch.allclose(r.transpose(1, 2) @ r, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(1000, dtype=torch.float64), atol=1e-12)


def test_columns_follow_the_gram_schmidt_construction():
    x = torch.tensor([[2.0, 0.0, 0.0, 1.0, 3.0, 0.0]])
    r = rot6d_to_rotmat(x)[0]
    assert torch.allclose(r[:, 0], torch.tensor([1.0, 0.0, 0.0]))  # a1 normalised
    assert torch.allclose(r[:, 1], torch.tensor([0.0, 1.0, 0.0]))  # a2 minus its a1 part, normalised
    assert torch.allclose(r[:, 2], torch.tensor([0.0, 0.0, 1.0]))  # b1 x b2


def test_first_two_columns_round_trip():
    angle = 0.7
    c, s = math.cos(angle), math.sin(angle)
    rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    x = torch.cat([rz[:, 0], rz[:, 1]])
    assert torch.allclose(rot6d_to_rotmat(x), rz, atol=1e-6)


def test_default_mean_pose_is_upright_in_the_camera_frame():
    pose, betas, cam = default_mean_params()
    r = rot6d_to_rotmat(pose.reshape(24, 6))
    assert torch.allclose(r[0], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    assert torch.allclose(r[1:], torch.eye(3).expand(23, 3, 3))
    assert betas.shape == (1, 10) and torch.allclose(cam, torch.tensor([[0.9, 0.0, 0.0]]))
