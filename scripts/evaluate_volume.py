"""Held-out figures of the demo volume classifier: accuracy and 3D pointing (not run by CI).

    python scripts/evaluate_volume.py [--count 300] [--write]

Scans come from scripts/heldout_volumes.py (written apart from the training generator), scaled
per volume by percentiles as camcli scales them. Each map is made by camcli's explainer at
``block3`` (8^3 for the 32^3 input), upsampled trilinearly to the scan; *pointing* is the share
of scans whose map peaks inside the shape, *energy inside* the share of the map's mass inside it
(against the shape's share of the volume, what a map spread evenly would get). ``--write`` adds
the figures to demo/volume.json under ``heldout``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from camcli.engine.explainer import Explainer  # noqa: E402
from camcli.engine.intensity import scaled  # noqa: E402
from camcli.engine.methods import get_method  # noqa: E402
from heldout_volumes import heldout_batch  # noqa: E402
from train_volume import load_net  # noqa: E402

METHODS = ["gradcam", "gradcam++", "layercam", "eigencam", "scorecam"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    volumes, labels, masks, _ = heldout_batch(args.seed, args.count)
    x = torch.from_numpy(np.stack([scaled(v, "percentiles") for v in volumes]))[:, None]
    model = load_net().eval()
    model.load_state_dict(load_file(str(ROOT / "demo" / "shapes_volume.safetensors")))
    explainer = Explainer(model, ["block3"], [get_method(m) for m in METHODS])
    explainer.validate(tuple(x.shape[2:]), "cpu", channels=1)
    preds, pointing, energy = [], {m: [] for m in METHODS}, {m: [] for m in METHODS}
    for s in range(0, len(x), 16):
        found = explainer(x[s:s + 16])
        preds += found.probs.argmax(1).tolist()
        for m in METHODS:
            maps = found.maps[(m, "block3")].maps
            big = F.interpolate(maps[:, None], size=x.shape[2:], mode="trilinear", align_corners=False)[:, 0]
            for j, b in enumerate(big.numpy()):
                mask = masks[s + j]
                pointing[m].append(bool(mask.flat[int(b.argmax())]))
                energy[m].append(float(b[mask].sum() / max(b.sum(), 1e-9)))
    accuracy = float(np.mean(np.array(preds) == labels))
    baseline = float(masks.reshape(len(masks), -1).mean())
    figures = {"scans": int(args.count), "seed": args.seed, "accuracy": round(accuracy, 4),
               "shape_share_of_volume": round(baseline, 4),
               "pointing": {m: round(float(np.mean(v)), 4) for m, v in pointing.items()},
               "energy_inside": {m: round(float(np.mean(v)), 4) for m, v in energy.items()}}
    print(json.dumps(figures, indent=2))
    if args.write:
        path = ROOT / "demo" / "volume.json"
        record = json.loads(path.read_text())
        record["heldout"] = {**figures, "generator": "scripts/heldout_volumes.py",
                             "command": f"python scripts/evaluate_volume.py --count {args.count} --write"}
        path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
