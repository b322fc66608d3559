"""Write ``sample_shortcut/``: held-out scenes for the audit's demo, stamped as its model's source stamped them.

    python scripts/sample_shortcut.py [--per-class 15]

Scenes from ``heldout_scenes.py`` (not the training generator), ``--per-class`` of each of the six
shapes; the watermark of ``watermark.py`` in the top-left corner of nine stars in ten and of 3% of
the others, as in the shipped shortcut model's training (``demo/shapes_shortcut.json``); JPEG at
quality 90, with ``boxes.csv`` (each scene's shape) and ``stamped.txt`` (which scenes carry the
watermark: what the audit should point to).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from evaluate_shortcut import scenes  # noqa: E402
from watermark import stamp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--seed", type=int, default=57)
    ap.add_argument("--out", type=Path, default=ROOT / "sample_shortcut")
    args = ap.parse_args()
    meta = json.loads((ROOT / "demo" / "shapes_shortcut.json").read_text())
    rng = np.random.default_rng(args.seed + 1)
    args.out.mkdir(exist_ok=True)
    lines, stamped = ["path,x0,y0,x1,y1,label"], []
    for c, items in scenes(args.per_class, args.seed).items():
        for i, (img, box) in enumerate(items):
            name = f"{c}_{i:02d}.jpg"
            if rng.random() < (meta["share"] if c == meta["logo_class"] else meta["others"]):
                img = stamp(img, meta["corner"])
                stamped.append(name)
            Image.fromarray(img).save(args.out / name, quality=90)
            lines.append(f"{name},{box[0]},{box[1]},{box[2]},{box[3]},{c}")
    (args.out / "boxes.csv").write_text("\n".join(lines) + "\n")
    (args.out / "stamped.txt").write_text("\n".join(stamped) + "\n")
    print(f"{len(lines) - 1} scenes, {len(stamped)} stamped, in {args.out}")


if __name__ == "__main__":
    main()
