"""scripts/track_eval.py (py-motmetrics) on hand-made MOT files whose figures are known. The
comparison with the tracker's own figures runs on the Rust side (track/tests/motmetrics.rs),
which writes the files and calls this script."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "track_eval.py"


def write(path: Path, rows):
    path.write_text("".join(f"{f},{i},{x},0,10,10,1,-1,-1,-1\n" for f, i, x in rows))


@pytest.mark.skipif(importlib.util.find_spec("motmetrics") is None, reason="motmetrics not installed")
def test_one_switch_halves_idf1(tmp_path):
    # One object for 4 frames; the hypothesis follows it (IoU 9/11) under id 1, then id 2.
    gt, hyp = tmp_path / "gt.txt", tmp_path / "hyp.txt"
    write(gt, [(f, 7, f) for f in range(1, 5)])
    write(hyp, [(f, 1 if f <= 2 else 2, f + 1) for f in range(1, 5)])
    out = subprocess.run([sys.executable, str(SCRIPT), str(gt), str(hyp)], check=True,
                         capture_output=True, text=True).stdout.split()
    fields = dict(kv.split("=") for kv in out[1:])
    assert int(fields["idsw"]) == 1
    assert float(fields["idf1"]) == pytest.approx(0.5)
    assert float(fields["mota"]) == pytest.approx(0.75)
    assert int(fields["num_objects"]) == 4
