"""A test-only model that simulates running out of GPU memory above a batch size.

    python -m models.oom_model --out FILE [--max-batch 2]

The file has the worker's model contract (``forward(crops) -> Dict[str, Tensor]``, ``meta()``);
it wraps the tiny preset and raises ``RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB
(simulated: batch N > max M)")`` when a batch has more than ``max_batch`` crops, so the worker's
OOM handling (halving the batch) can be tested on a CPU. A crop that is entirely white (every
byte 255) never fits, not even alone: it stands for a frame that fails at batch size one, which
the worker must leave pending for a retry and dead-letter after ``max_deliveries``.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from .hmr2 import HMR2, build


class OomModel(nn.Module):
    """The tiny HMR2 behind a simulated memory limit of ``max_batch`` crops per forward."""

    max_batch: int
    meta_json: str

    def __init__(self, model: HMR2, max_batch: int):
        super().__init__()
        self.model = model
        self.max_batch = max_batch
        meta = json.loads(model.meta_json)
        meta.update(test_only="simulated CUDA OOM above max_batch", max_batch=max_batch)
        self.meta_json = json.dumps(meta)

    def forward(self, crops: Tensor) -> Dict[str, Tensor]:
        b = crops.size(0)
        if b > self.max_batch:
            raise RuntimeError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated: batch {} > max {})".format(
                    b, self.max_batch
                )
            )
        white = crops.reshape(b, -1).amin(dim=1) == 255
        if bool(white.any()):
            raise RuntimeError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated: an all-white crop never fits)"
            )
        return self.model(crops)

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json


def make(max_batch: int = 2, seed: int = 0) -> torch.jit.ScriptModule:
    """The scripted OOM test model."""
    return torch.jit.script(OomModel(build("tiny", seed=seed), max_batch))


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m models.oom_model", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-batch", type=int, default=2, help="largest batch that does not 'run out of memory'")
    args = ap.parse_args(argv)
    if args.max_batch < 1:
        ap.error("--max-batch must be at least 1")
    scripted = make(args.max_batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, args.out)
    print(f"exported {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, OOM test model, max batch {args.max_batch}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
