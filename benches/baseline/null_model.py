"""A model with the worker's contract whose forward pass costs (almost) nothing.

    .venv/bin/python benches/baseline/null_model.py --out bench-out/null.pt

``hmr2 bench --model bench-out/null.pt`` then measures the worker's whole pipeline except
the forward pass directly (fetch, parse, base64, decode, crop, batching, the host copy of the
batch, postprocess, result JSON, the atomic publish), to compare with the raw decode rate of the
same frames that the same run measures. The outputs are fixed, plausible values (a person facing
the camera at the crop's centre), so postprocess and encoding do their normal work.
"""

import argparse
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn


class NullModel(nn.Module):
    meta_json: str

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("cam", torch.tensor([0.9, 0.0, 0.1]))
        self.register_buffer("orient", torch.eye(3).reshape(1, 3, 3))
        self.register_buffer("pose", torch.eye(3).expand(23, 3, 3).contiguous())
        self.register_buffer("betas", torch.zeros(10))
        self.register_buffer("kp", (torch.rand(44, 3, generator=g) - 0.5) * torch.tensor([0.8, 1.6, 0.3]))
        self.meta_json = json.dumps(
            {
                "name": "null",
                "preset": "bench",
                "version": "0",
                "dtype": "fp32",
                "input_size": [256, 256],
                "input_format": "uint8 BHWC RGB",
                "outputs": {
                    "pred_cam": ["B", 3],
                    "global_orient": ["B", 1, 3, 3],
                    "body_pose": ["B", 23, 3, 3],
                    "betas": ["B", 10],
                    "keypoints_3d": ["B", 44, 3],
                },
                "weights": "none: fixed outputs, for measuring the pipeline without a forward pass",
            }
        )

    def forward(self, crops: Tensor) -> Dict[str, Tensor]:
        b = crops.size(0)
        return {
            "pred_cam": self.cam.expand(b, 3).contiguous(),
            "global_orient": self.orient.expand(b, 1, 3, 3).contiguous(),
            "body_pose": self.pose.expand(b, 23, 3, 3).contiguous(),
            "betas": self.betas.expand(b, 10).contiguous(),
            "keypoints_3d": self.kp.expand(b, 44, 3).contiguous(),
        }

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.jit.save(torch.jit.script(NullModel()), str(tmp))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
