"""A test-only model that fails like a broken device or a corrupted model on marked crops.

    python -m models.faulty_model --out FILE

The file has the worker's model contract (``forward(crops) -> Dict[str, Tensor]``, ``meta()``);
it wraps the tiny preset and behaves exactly like it, except on a batch that holds a crop whose
bytes all have one marker value:

- 255 (an all-white crop, as a box inside an all-white frame gives): raises
  ``RuntimeError("CUDA error: an illegal memory access was encountered (simulated: ...)")``, the
  way a faulty device or driver fails a kernel;
- 254: returns outputs of the wrong shapes (``pred_cam`` ``[B, 2]``, ``betas`` without its batch
  rows), the way a corrupted model misbehaves;
- 253: returns a ``pred_cam`` that holds no data (a tensor on the ``meta`` device), so copying it
  to the host fails inside libtorch.

None of these is an out-of-memory error, and the worker's inputs are always well-formed, so a
worker that sees one must consider its model or device broken and stop taking work, leaving its
jobs to other workers (which run a healthy model and answer the marked frame normally).
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

class FaultyModel(nn.Module):
    """The tiny HMR2, failing on any batch that holds a marked crop."""

    meta_json: str

    def __init__(self, model: HMR2):
        super().__init__()
        self.model = model
        meta = json.loads(model.meta_json)
        meta.update(
            test_only="simulated faults on crops of one value",
            faults={"255": "raises a device error", "254": "wrong output shapes", "253": "an output without data"},
        )
        self.meta_json = json.dumps(meta)

    def forward(self, crops: Tensor) -> Dict[str, Tensor]:
        b = crops.size(0)
        flat = crops.reshape(b, -1)
        lo = flat.amin(dim=1)
        one_value = lo == flat.amax(dim=1)
        if bool((one_value & (lo == 255)).any()):
            raise RuntimeError(
                "CUDA error: an illegal memory access was encountered (simulated: an all-white crop)"
            )
        out = self.model(crops)
        if bool((one_value & (lo == 254)).any()):
            out["pred_cam"] = out["pred_cam"][:, :2]
            out["betas"] = out["betas"].reshape(-1)[:10]
        if bool((one_value & (lo == 253)).any()):
            out["pred_cam"] = torch.empty([b, 3], device=torch.device("meta"))
        return out

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json


def make(seed: int = 0) -> torch.jit.ScriptModule:
    """The scripted faulty test model."""
    return torch.jit.script(FaultyModel(build("tiny", seed=seed)))


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m models.faulty_model", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    scripted = make()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, args.out)
    print(f"exported {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, faulty test model")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
