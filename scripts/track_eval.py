#!/usr/bin/env python3
"""IDF1, ID switches and MOTA of MOT-challenge files, by py-motmetrics (the reference
implementation), to cross-check the tracker's own figures (hmr2_track::eval).

    .venv/bin/python scripts/track_eval.py [--overall] GT.txt HYP.txt [GT2.txt HYP2.txt ...]

Files: `frame,id,x,y,w,h,conf,-1,-1,-1` (as `cargo run -p hmr2-track --example eval -- --out DIR`
writes them). A hypothesis matches a ground-truth box at IoU >= 0.5. Prints one line per pair:
`<hyp file> idf1=<f> idsw=<n> mota=<f> idtp=<n> num_objects=<n>`, full precision; with
`--overall`, then one line `OVERALL ...` for all pairs together (motmetrics' own aggregate).
"""
import sys

import numpy as np

# motmetrics 1.4.0 (the latest release) still calls np.asfarray, which NumPy 2 removed.
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)

import motmetrics as mm  # noqa: E402


METRICS = ["idf1", "num_switches", "mota", "idtp", "num_objects"]


def accumulate(gt_path: str, hyp_path: str):
    gt = mm.io.loadtxt(gt_path, fmt="mot15-2D", min_confidence=-1)
    hyp = mm.io.loadtxt(hyp_path, fmt="mot15-2D", min_confidence=-1)
    return mm.utils.compare_to_groundtruth(gt, hyp, "iou", distth=0.5)


def figures(row) -> dict:
    return {
        "idf1": float(row["idf1"]),
        "idsw": int(row["num_switches"]),
        "mota": float(row["mota"]),
        "idtp": int(row["idtp"]),
        "num_objects": int(row["num_objects"]),
    }


def line(name: str, r: dict) -> str:
    return (
        f"{name} idf1={r['idf1']!r} idsw={r['idsw']} mota={r['mota']!r} "
        f"idtp={r['idtp']} num_objects={r['num_objects']}"
    )


def main(argv: list) -> int:
    overall = "--overall" in argv
    argv = [a for a in argv if a != "--overall"]
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    mh = mm.metrics.create()
    accs, names = [], []
    for gt_path, hyp_path in zip(argv[0::2], argv[1::2]):
        acc = accumulate(gt_path, hyp_path)
        summary = mh.compute(acc, metrics=METRICS, name="x")
        print(line(hyp_path, figures(summary.loc["x"])))
        accs.append(acc)
        names.append(hyp_path)
    if overall:
        summary = mh.compute_many(accs, metrics=METRICS, names=names, generate_overall=True)
        print(line("OVERALL", figures(summary.loc["OVERALL"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
