"""Shared fixtures. Torch runs single-threaded: the suite's models are tiny, and on a loaded
2-core machine a second thread only adds contention."""

import pytest
import torch

from models.hmr2 import HMR2, build

torch.set_num_threads(1)


def pytest_configure(config):
    # TorchScript is what the worker (libtorch via tch) runs; torch marks its Python API deprecated.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.:DeprecationWarning")


def make_crops(batch: int, seed: int = 0) -> torch.Tensor:
    """uint8 [B,256,256,3] crops that differ visibly: a random colour each, a bright square on
    odd items, and noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (batch, 1, 1, 3), generator=g)
    crops = colours.expand(batch, 256, 256, 3).clone()
    crops[1::2, 90:190, 60:160] = 255
    crops = crops + torch.randint(-20, 21, crops.shape, generator=g)
    return crops.clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="session")
def tiny() -> HMR2:
    return build("tiny")


@pytest.fixture(scope="session")
def tiny_scripted(tiny: HMR2) -> torch.jit.ScriptModule:
    return torch.jit.script(build("tiny"))
