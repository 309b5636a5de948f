"""Export HMR2.0 to a TorchScript file the worker loads.

    python -m models.export --preset tiny|full [--checkpoint FILE] [--smpl FILE]
        [--mean-params FILE] [--j19 FILE] --dtype fp32|fp16|bf16 --device cpu|cuda --out FILE
        [--seed N] [--no-check]

Without ``--checkpoint`` the weights are random (seeded); without ``--smpl`` a synthetic SMPL of
the real shape stands in. ``meta()`` of the file records both. The module is scripted (not
traced), moved to ``--device`` before saving (a cuda export loads onto cuda), and checked against
the eager model on a random batch unless ``--no-check``.

Beside ``--out`` it writes the mesh topology, ``<out without its extension>.mesh.json``
(``hmr2-tiny.pt`` -> ``hmr2-tiny.mesh.json``): faces, kinematic tree, joint and keypoint names
(:mod:`models.mesh`), from the SMPL file or the synthetic stand-in, whichever the model holds;
and the model's SMPL layer on its own, ``<out without its extension>.smpl.pt``
(:mod:`models.smpl_export`, contract ``smpl-layer/1``): TorchScript, fp32, on the CPU, whatever
``--dtype`` and ``--device``, for the tracker to turn smoothed parameters into vertices. Unless
``--no-check``, its vertices and keypoints are compared with the model's on the check batch.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from . import mesh, smpl_export
from .hmr2 import DTYPES, HMR2, PRESETS, build
from .loaders import load_checkpoint_trunk, load_j19, load_mean_params, load_smpl
from .smpl import SmplData, synthetic_smpl


def smpl_path(model_path: "str | os.PathLike") -> Path:
    """Where the SMPL layer of ``model_path`` is written: ``hmr2-tiny.pt`` -> ``hmr2-tiny.smpl.pt``
    (:func:`models.smpl_export.smpl_path`)."""
    return smpl_export.smpl_path(model_path)


def log(msg: str) -> None:
    print(f"export: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.export", description="Export HMR2.0 to TorchScript.")
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--checkpoint", type=Path, help="official Lightning checkpoint (.ckpt)")
    ap.add_argument("--smpl", type=Path, help="SMPL_NEUTRAL.pkl (needs --j19)")
    ap.add_argument("--mean-params", type=Path, help="smpl_mean_params.npz")
    ap.add_argument("--j19", type=Path, help="SMPL_to_J19.pkl (needs --smpl)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="backbone and head dtype")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (no checkpoint)")
    ap.add_argument("--no-check", action="store_true", help="skip the scripted-vs-eager check")
    args = ap.parse_args(argv)
    if (args.smpl is None) != (args.j19 is None):
        ap.error("--smpl and --j19 go together (the 44 keypoints need both)")
    for name in ("checkpoint", "smpl", "mean_params", "j19"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            ap.error(f"--{name.replace('_', '-')}: no such file: {path}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")
    return args


def smpl_data_for(args: argparse.Namespace) -> SmplData:
    """The SMPL arrays the arguments name: the files of ``--smpl`` and ``--j19``, or the
    synthetic stand-in."""
    if args.smpl is None:
        return synthetic_smpl()
    log(f"reading {args.smpl} and {args.j19}")
    return load_smpl(args.smpl, j19=load_j19(args.j19))


def make_model(args: argparse.Namespace, smpl_data: Optional[SmplData] = None) -> HMR2:
    """The eager model the arguments describe, on its device, in eval mode (``smpl_data``:
    the arrays of :func:`smpl_data_for`, read here when not given)."""
    if smpl_data is None:
        smpl_data = smpl_data_for(args)
    log(f"building the {args.preset} preset")
    model = build(args.preset, seed=args.seed, smpl_data=smpl_data, init=args.checkpoint is None)
    if args.checkpoint is not None:
        log(f"loading {args.checkpoint}")
        model.load_trunk(load_checkpoint_trunk(args.checkpoint))
        model.set_meta(weights=args.checkpoint.name)
    if args.mean_params is not None:
        log(f"reading {args.mean_params}")
        model.set_mean_params(*load_mean_params(args.mean_params))
    model.set_dtype(args.dtype)
    return model.to(args.device).eval()


def check(model: HMR2, scripted: torch.jit.ScriptModule, device: str) -> float:
    """Largest difference between eager and scripted outputs on a random batch of 2."""
    gen = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8, generator=gen).to(device)
    with torch.no_grad():
        eager, script = model(crops), scripted(crops)
    for name, value in script.items():
        if not torch.isfinite(value).all():
            raise RuntimeError(f"output {name} of the scripted model is not finite")
    return max(float((eager[k] - script[k]).abs().max()) for k in eager)


#: Largest difference (metres) the export accepts between the SMPL layer's vertices or keypoints
#: and the model's for the model's own parameters (same arrays, same fp32 code: 0 on the CPU).
SMPL_LAYER_TOLERANCE = 1e-4


def check_smpl_layer(model: HMR2, layer: torch.jit.ScriptModule, device: str) -> float:
    """Largest difference between the model's ``vertices``/``keypoints_3d`` and the SMPL layer's
    for the model's own parameters, on a random batch of 2 (the layer runs on the CPU)."""
    gen = torch.Generator().manual_seed(2)
    crops = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8, generator=gen).to(device)
    with torch.no_grad():
        out = {k: v.cpu() for k, v in model(crops).items()}
        vertices, keypoints = layer(out["betas"], out["global_orient"], out["body_pose"])
    return max(float((out["vertices"] - vertices).abs().max()), float((out["keypoints_3d"] - keypoints).abs().max()))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    start = time.monotonic()
    smpl_data = smpl_data_for(args)
    topo = mesh.topology(smpl_data)  # checked before anything is written
    model = make_model(args, smpl_data)
    params = model.param_count()
    log(f"{params:,} parameters (backbone {sum(p.numel() for p in model.backbone.parameters()):,}, "
        f"head {sum(p.numel() for p in model.smpl_head.parameters()):,}), dtype {args.dtype}, device {args.device}")
    log("scripting")
    scripted = torch.jit.script(model)
    if not args.no_check:
        diff = check(model, scripted, args.device)
        log(f"scripted vs eager on a random batch of 2: max abs difference {diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, args.out)
    side = mesh.write(mesh.mesh_path(args.out), topo)
    log(f"wrote {side}: {topo['topology']} topology, {len(topo['faces'])} faces over {topo['num_vertices']} vertices")
    layer_path = smpl_export.write(smpl_path(args.out), model.smpl, smpl_data.source)
    log(f"wrote {layer_path}: SMPL layer ({smpl_export.CONTRACT}, {smpl_data.source}), fp32, cpu")
    if not args.no_check:
        diff = check_smpl_layer(model, torch.jit.load(str(layer_path)), args.device)
        log(f"SMPL layer vs model on a random batch of 2: max abs difference {diff:.3g}")
        if not diff <= SMPL_LAYER_TOLERANCE:
            raise RuntimeError(
                f"the SMPL layer {layer_path} differs from the model by {diff:.3g} m "
                f"(more than {SMPL_LAYER_TOLERANCE:g}): it does not hold the model's SMPL"
            )
    size = args.out.stat().st_size
    meta = json.loads(scripted.meta())
    print(
        f"exported {args.out}: {size / 1e6:.1f} MB, {params:,} params, preset {args.preset}, "
        f"{args.dtype}, {args.device}, weights {meta['weights']}, smpl {meta['smpl']}, "
        f"{time.monotonic() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
