"""Held-out figures of the demo 3D segmenter, through camcli itself (not run by CI).

    python scripts/evaluate_volume_segmenter.py [--count 90] [--write]

Scans come from scripts/heldout_volumes.py (written apart from the training generator: sub-voxel
occupancy instead of a signed distance, Rician noise, other bias fields and spacings), saved as
NIfTI stored L, P, S (as DICOM converters store scans) with their label volumes (0 outside the
shape, 1 + its class inside). ``camcli explain`` runs the demo config on them and ``camcli
evaluate`` scores the run: the segmenter's IoU per class and mIoU, and for each method the share
of explained classes whose map peaks inside that class's voxels (pointing) and the share of the
map's mass there (energy). ``--write`` adds the figures to demo/volume_segmenter.json under ``heldout``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from heldout_volumes import heldout_batch  # noqa: E402

METHODS = "gradcam,gradcam++,layercam,eigencam,scorecam"
#: the default (the last map before the 1x1x1 head: near the class's own mask) and the bottleneck (8^3)
LAYERS = ("up1", "bottom")


def main() -> None:
    import nibabel as nib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=90)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    volumes, labels, masks, spacings = heldout_batch(args.seed, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "scans").mkdir()
        (tmp / "truth").mkdir()
        for i, (v, c, m, s) in enumerate(zip(volumes, labels, masks, spacings)):
            affine = np.diag([-s[0], -s[1], s[2], 1.0])  # stored L, P, S: the arrays flipped on x and y
            name = f"scan{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(v[::-1, ::-1]), affine), str(tmp / "scans" / name))
            truth = np.where(m, c + 1, 0).astype(np.uint8)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(truth[::-1, ::-1]), affine), str(tmp / "truth" / name))
        subprocess.run([sys.executable, "-m", "camcli", "explain", str(tmp / "scans"), "--config",
                        str(ROOT / "configs" / "demo-volume-segmenter.toml"), "--method", METHODS,
                        *(a for layer in LAYERS for a in ("--layer", layer)), "--out", str(tmp / "run"), "--quiet"],
                       check=True)
        report = json.loads(subprocess.run([sys.executable, "-m", "camcli", "evaluate", str(tmp / "run"), "--truth",
                                            str(tmp / "truth"), "--json", "--quiet"], check=True,
                                           capture_output=True, text=True).stdout)
    seg = report["segmenter"]
    figures = {"scans": int(args.count), "seed": args.seed, "miou": round(seg["miou"], 4),
               "voxel_accuracy": round(seg["pixel_accuracy"], 4),
               "iou_per_class": {k: round(v, 4) for k, v in seg["per_class_iou"].items()},
               "pointing": {f"{s['method']}@{s['layer']}": round(s["pointing"], 4) for s in report["summaries"]},
               "energy_inside": {f"{s['method']}@{s['layer']}": round(s["energy"], 4) for s in report["summaries"]},
               "shape_share_of_volume": round(float(masks.reshape(len(masks), -1).mean()), 4)}
    print(json.dumps(figures, indent=2))
    if args.write:
        path = ROOT / "demo" / "volume_segmenter.json"
        record = json.loads(path.read_text())
        record["heldout"] = {**figures, "generator": "scripts/heldout_volumes.py",
                             "command": f"python scripts/evaluate_volume_segmenter.py --count {args.count} --write"}
        path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
