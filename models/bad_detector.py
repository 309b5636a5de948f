"""Test-only detector files that break the `person-detector/1` contract in one way each, so the
worker's start-up checks can be tested:

    python -m models.bad_detector --kind wrong_contract --out FILE
    python -m models.bad_detector --kind half_scores --out FILE
    python -m models.bad_detector --kind no_scores --out FILE
    python -m models.bad_detector --kind no_meta --out FILE

`wrong_contract` names `person-detector/0` in its meta(); `half_scores` returns float16 scores;
`no_scores` returns only `boxes`; `no_meta` has no meta() method. Each otherwise takes the
contract's `uint8 [B,S,S,3]` input.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor, nn

KINDS = ("wrong_contract", "half_scores", "no_scores", "no_meta")


class BadDetector(nn.Module):
    """Returns one fixed box per frame, with the fault chosen by `kind`."""

    kind: str
    meta_json: str

    def __init__(self, kind: str, input_size: int = 64):
        super().__init__()
        self.kind = kind
        contract = "person-detector/0" if kind == "wrong_contract" else "person-detector/1"
        self.meta_json = json.dumps(
            {"contract": contract, "name": f"bad-{kind}", "input_size": input_size, "test_only": kind}
        )

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        b = images.shape[0]
        boxes = torch.zeros(b, 1, 4, dtype=torch.float32)
        boxes[:, 0, 2:] = 10.0
        scores = torch.ones(b, 1, dtype=torch.float32)
        out: Dict[str, Tensor] = {"boxes": boxes}
        if self.kind == "half_scores":
            out["scores"] = scores.half()
        elif self.kind != "no_scores":
            out["scores"] = scores
        return out

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json


class NoMeta(nn.Module):
    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        b = images.shape[0]
        return {"boxes": torch.zeros(b, 1, 4), "scores": torch.zeros(b, 1)}


def build(kind: str) -> nn.Module:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    return NoMeta() if kind == "no_meta" else BadDetector(kind)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(build(args.kind)).save(str(args.out))
    print(f"wrote {args.out} ({args.kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
