"""How ``camcli audit`` grows with the number of maps: synthetic runs of up to 50,000 maps (the size
of ImageNet's validation set), each audited by a child process (wall time and peak resident
memory, os.wait4).

    python benchmarks/audit_scale.py                         # 1,000 .. 50,000 maps, three layouts
    python benchmarks/audit_scale.py --maps 50000 --layout few

A synthetic run is a ``predictions.csv`` written with camcli's own row class and one saved map
per row (``--side`` 7: what ``--save-heatmap npy --heatmap-size layer`` writes for a ResNet at
224 px). Each map is a blob where its image's object would be, plus noise; in one class in ten,
a fifth of the maps (in the one-class layout, 2% of them) sit in a fixed corner instead (a watermark's cluster). Three layouts: ``many``
classes of 50 maps each (ImageNet's validation set: 1,000 classes x 50), ``few``: ten classes, so
a class holds up to 5,000 maps (its graph takes the sparse eigensolver), and ``one``: every map in
one class, the largest graph there can be. The audit reads every map, so part of its time is the
file system's; the table also gives the time to write the synthetic run, for scale.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from volumes import timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_run(folder: Path, n: int, classes: int, side: int, seed: int = 0) -> None:
    from camcli.output.csvfile import write_rows
    from camcli.output.rows import PredictionRow

    rng = np.random.default_rng(seed)
    (folder / "heatmaps").mkdir(parents=True)
    yy, xx = np.mgrid[0:side, 0:side]
    labels = rng.integers(0, classes, n)
    rows = []
    for i in range(n):
        c = int(labels[i])
        if c % 10 == 0 and rng.random() < 0.2 and classes > 1 or classes == 1 and rng.random() < 0.02:
            cx, cy = 0.3, 0.3  # the watermark's corner, in cells
        else:
            cx, cy = rng.uniform(0.5, side - 1.5, 2)
        heat = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 1.5) + rng.random((side, side)) * 0.15
        heat = (heat / heat.max()).astype(np.float32)
        rel = f"heatmaps/img{i:05d}.jpg.gradcam@layer4.1.npy"
        np.save(folder / rel, heat)
        rows.append(PredictionRow(index=i, path=f"img{i:05d}.jpg", width=224, height=224, method="gradcam",
                                  layer="layer4[1]", heatmap=rel, pred_index=c, pred_label=f"class{c:04d}",
                                  score=0.9, target_index=c, target_label=f"class{c:04d}", target_score=0.9))
    columns = ["index", "path", "width", "height", "pred_index", "pred_label", "score", "target_index", "target_label",
               "target_score", "method", "layer", "output", "heatmap", "status", "error", "note"]
    write_rows(folder / "predictions.csv", columns, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", default="1000,5000,20000,50000")
    ap.add_argument("--layout", choices=("many", "few", "one", "all"), default="all")
    ap.add_argument("--side", type=int, default=7)
    args = ap.parse_args()
    layouts = ("many", "few", "one") if args.layout == "all" else (args.layout,)
    print("| maps | classes | largest class | writing the run s | audit wall s | peak RSS MB | flagged clusters |")
    print("|---|---|---|---|---|---|---|")
    for layout in layouts:
        for n in map(int, args.maps.split(",")):
            classes = max(1, n // 50) if layout == "many" else 10 if layout == "few" else 1
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / "run"
                t0 = time.perf_counter()
                make_run(run, n, classes, args.side)
                made = time.perf_counter() - t0
                wall, rss = timed([sys.executable, "-m", "camcli", "audit", str(run), "--quiet"])
                flagged = json.loads((run / "audit.json").read_text())["flagged"]
                with open(run / "audit.csv") as f:
                    sizes = {}
                    for r in csv.DictReader(f):
                        sizes[r["class"]] = sizes.get(r["class"], 0) + 1
                print(f"| {n:,} | {classes:,} | {max(sizes.values()):,} | {made:.0f} | {wall:.1f} | {rss:.0f} | {flagged} |",
                      flush=True)


if __name__ == "__main__":
    main()
