"""The pictures of docs/volumes.md (not run by CI).

    python scripts/volume_pictures.py RUN   # RUN: camcli explain sample_volumes/ --config configs/demo-volume.toml --out RUN

``docs/volume.jpg``: camcli's own picture of one map (planes through the peak, axial montage).
``docs/volume_over_scan.jpg``: the NIfTI map camcli wrote, opened over its scan file the way a
viewer does, with nibabel alone and no camcli code: both files' voxels on the scan file's grid
(the map's affine must equal the scan's for this to line up), the map's peak slice in each of the
file's three axes.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    run = Path(sys.argv[1])
    with open(run / "volumes.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    row = next(r for r in rows if r["path"].endswith("lps.nii.gz") and r["method"] == "scorecam")
    picture = cv2.imread(str(run / row["output"]))
    cv2.imwrite(str(ROOT / "docs" / "volume.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    scan = nib.load(str(ROOT / "sample_volumes" / row["path"]))
    heat = nib.load(str(run / row["heatmap"]))
    assert np.allclose(scan.affine, heat.affine) and scan.shape == heat.shape, "the map does not lie over the scan"
    s, h = scan.get_fdata(), heat.get_fdata()
    lo, hi = np.percentile(s, (0.5, 99.5))
    s = np.clip((s - lo) / (hi - lo), 0, 1)
    peak = np.unravel_index(int(h.argmax()), h.shape)
    tiles = []
    for axis in range(3):
        grey = (np.take(s, peak[axis], axis=axis) * 255).astype(np.uint8)
        colour = cv2.applyColorMap((np.take(h, peak[axis], axis=axis) * 255).astype(np.uint8), cv2.COLORMAP_JET)
        tile = cv2.addWeighted(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 0.55, colour, 0.45, 0)
        tile = cv2.resize(tile, (tile.shape[1] * 6, tile.shape[0] * 6), interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, f"file axis {'ijk'[axis]} = {peak[axis]}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(str(ROOT / "docs" / "volume_over_scan.jpg"), np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote docs/volume.jpg and docs/volume_over_scan.jpg from {row['path']}")


if __name__ == "__main__":
    main()
