"""The SMPL layer written beside an exported model: ``<model>.smpl.pt``.

The tracker smooths a video's SMPL parameters on the CPU and, when the frames asked for
vertices, turns the smoothed parameters back into a mesh. It does that with this file: the SMPL
layer of the model it sits beside (the same arrays: the same SMPL file, or the same synthetic
stand-in), scripted on its own, fp32, on the CPU, whatever the model's dtype and device.

Contract ``smpl-layer/1`` (TorchScript)::

    forward(betas: float32 [B,10], global_orient: float32 [B,1,3,3],
            body_pose: float32 [B,23,3,3]) -> Tuple[vertices, keypoints_3d]

    vertices      float32 [B,6890,3]   metres, as the model's ``vertices`` output
    keypoints_3d  float32 [B,44,3]     metres, as the model's ``keypoints_3d`` output

Rotations are matrices acting on column vectors, as the model outputs them. ``B`` may be 0. Inputs
of another shape or dtype raise an error starting ``smpl layer:``. ``meta()`` returns a JSON
string: ``{"contract": "smpl-layer/1", "smpl": "synthetic" | "real", "source", "vertices": 6890,
"keypoints": 44, "dtype": "float32", "inputs": {...}, "outputs": [...]}`` (``outputs`` lists the
tuple's items in order, each ``[name, shape]``).

Written by ``python -m models.export`` beside every model; on its own (for a model exported
before this file existed, with the same ``--smpl``/``--j19`` or none)::

    python -m models.smpl_export --out FILE.smpl.pt [--smpl SMPL_NEUTRAL.pkl --j19 SMPL_to_J19.pkl]
"""

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .smpl import NUM_BETAS, NUM_JOINTS, SMPL, SmplData, synthetic_smpl

CONTRACT = "smpl-layer/1"
SUFFIX = ".smpl.pt"
NUM_KEYPOINTS = 44

#: The tuple ``forward`` returns, in order: name and shape ("B" is the batch size).
OUTPUTS = [["vertices", ["B", "V", 3]], ["keypoints_3d", ["B", NUM_KEYPOINTS, 3]]]
INPUTS = {"betas": ["B", NUM_BETAS], "global_orient": ["B", 1, 3, 3], "body_pose": ["B", NUM_JOINTS - 1, 3, 3]}


def smpl_path(model_path: str | os.PathLike) -> Path:
    """The SMPL layer of ``model_path``: its last extension replaced by ``.smpl.pt``
    (``hmr2-tiny.pt`` -> ``hmr2-tiny.smpl.pt``), as the worker looks for it."""
    path = Path(model_path)
    return path.with_name(path.stem + SUFFIX)


class SmplLayer(nn.Module):
    """An SMPL layer with its inputs checked, fp32 on the CPU (scriptable)."""

    meta_json: str
    num_vertices: int

    def __init__(self, smpl: SMPL, source: str):
        super().__init__()
        self.smpl = copy.deepcopy(smpl).to(device="cpu", dtype=torch.float32).eval()
        self.num_vertices = int(self.smpl.v_template.shape[0])
        outputs = [[name, [self.num_vertices if d == "V" else d for d in shape]] for name, shape in OUTPUTS]
        self.meta_json = json.dumps(
            {
                "contract": CONTRACT,
                "smpl": "synthetic" if source == "synthetic" else "real",
                "source": source,
                "vertices": self.num_vertices,
                "keypoints": NUM_KEYPOINTS,
                "dtype": "float32",
                "inputs": INPUTS,
                "outputs": outputs,
            }
        )

    def forward(self, betas: Tensor, global_orient: Tensor, body_pose: Tensor) -> Tuple[Tensor, Tensor]:
        if betas.dim() != 2 or betas.size(1) != 10:
            raise ValueError("smpl layer: betas must be float32 [B,10], got shape {}".format(betas.shape))
        b = betas.size(0)
        if global_orient.dim() != 4 or global_orient.size(0) != b or global_orient.size(1) != 1 \
                or global_orient.size(2) != 3 or global_orient.size(3) != 3:
            raise ValueError("smpl layer: global_orient must be float32 [B,1,3,3] with the B of betas ({}), got shape {}".format(b, global_orient.shape))
        if body_pose.dim() != 4 or body_pose.size(0) != b or body_pose.size(1) != 23 \
                or body_pose.size(2) != 3 or body_pose.size(3) != 3:
            raise ValueError("smpl layer: body_pose must be float32 [B,23,3,3] with the B of betas ({}), got shape {}".format(b, body_pose.shape))
        for name, t in (("betas", betas), ("global_orient", global_orient), ("body_pose", body_pose)):
            if t.dtype != torch.float32:
                raise ValueError("smpl layer: {} must be float32 (convert before the call)".format(name))
        device = self.smpl.v_template.device
        if b == 0:
            empty = torch.zeros([0, self.num_vertices, 3], dtype=torch.float32, device=device)
            return empty, torch.zeros([0, 44, 3], dtype=torch.float32, device=device)
        vertices, keypoints = self.smpl(betas.to(device), global_orient.to(device), body_pose.to(device))
        return vertices.contiguous(), keypoints.contiguous()

    @torch.jit.export
    def meta(self) -> str:
        """JSON description of this file (contract ``smpl-layer/1``)."""
        return self.meta_json


def script(smpl: SMPL, source: str) -> torch.jit.ScriptModule:
    """The scripted layer of ``smpl`` (a CPU fp32 copy; ``smpl`` itself is left where it is)."""
    return torch.jit.script(SmplLayer(smpl, source))


def write(path: str | os.PathLike, smpl: SMPL, source: str) -> Path:
    """Script the layer of ``smpl`` and save it to ``path``, atomically (a temporary file,
    renamed). ``source`` is ``"synthetic"`` or the SMPL file's name (``SmplData.source``)."""
    path = Path(path)
    scripted = script(smpl, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, path)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    from .loaders import load_j19, load_smpl

    ap = argparse.ArgumentParser(prog="python -m models.smpl_export", description="Write an SMPL layer (smpl-layer/1).")
    ap.add_argument("--out", type=Path, required=True, help="usually <model without .pt>.smpl.pt")
    ap.add_argument("--smpl", type=Path, help="SMPL_NEUTRAL.pkl the model was exported with (needs --j19)")
    ap.add_argument("--j19", type=Path, help="SMPL_to_J19.pkl (needs --smpl)")
    args = ap.parse_args(argv)
    if (args.smpl is None) != (args.j19 is None):
        ap.error("--smpl and --j19 go together (the 44 keypoints need both)")
    data: SmplData = synthetic_smpl() if args.smpl is None else load_smpl(args.smpl, j19=load_j19(args.j19))
    out = write(args.out, SMPL(data), data.source)
    print(f"wrote {out}: smpl layer ({data.source}), {out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
