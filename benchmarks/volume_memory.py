"""Peak memory on a full-size CT: a 512 x 512 x 400 scan (int16 Hounsfield units, stored LPS, as
converters write CT) explained by camcli and by MONAI's per-volume loop, each in a child process
(wall time and peak resident memory, os.wait4), beside camcli on a 32^3 scan (what importing
torch and loading the model cost, whatever the scan).

    python benchmarks/volume_memory.py            # about 2 minutes on 2 cores

The model is the demo volume classifier; the methods Grad-CAM, then Grad-CAM and Score-CAM. A
scan of this size is 420 MB in float32 and its map as many: camcli keeps the scan's values only
until the model's input and a picture-sized copy are made, and writes the full-size map a slab at
a time (camcli/output/volume_nifti.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from volumes import MONAI_LOOP, ROOT, timed


def make_ct(path: Path, shape: tuple[int, int, int]) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y, z = shape
    volume = np.full(shape, -1000, np.int16)  # air
    i, j = np.ogrid[:x, :y]
    body = ((i - x / 2) / (0.4 * x)) ** 2 + ((j - y / 2) / (0.3 * y)) ** 2 < 1
    volume[body] = 40  # soft tissue, every slice
    ii, jj, kk = np.ogrid[:x, :y, :z]
    volume[(ii - 0.6 * x) ** 2 + (jj - 0.43 * y) ** 2 + (kk - 0.45 * z) ** 2 < (0.08 * x) ** 2] = 300
    volume += rng.integers(-20, 20, size=shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([-0.7, -0.7, 1.0, 1.0])), str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 400))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "ct").mkdir()
        make_ct(tmp / "ct" / "ct.nii.gz", tuple(args.shape))
        (tmp / "small").mkdir()
        make_ct(tmp / "small" / "small.nii.gz", (32, 32, 32))
        (tmp / "monai_loop.py").write_text(MONAI_LOOP)
        config = str(ROOT / "configs" / "demo-volume.toml")

        def camcli(folder: str, methods: str) -> list[str]:
            return [sys.executable, "-m", "camcli", "explain", str(tmp / folder), "--config", config, "--method",
                    methods, "--quiet", "--overwrite", "--workers", "0", "--out", str(tmp / "out")]

        runs = {
            "camcli, 32^3 scan, Grad-CAM (imports + model)": camcli("small", "gradcam"),
            "camcli, CT, Grad-CAM": camcli("ct", "gradcam"),
            "camcli, CT, Grad-CAM + Score-CAM": camcli("ct", "gradcam,scorecam"),
            "MONAI GradCAM loop, CT": [sys.executable, str(tmp / "monai_loop.py"), str(tmp / "ct"), str(tmp / "m"),
                                       "cam", str(ROOT)],
        }
        print("| run | wall s | peak RSS MB |")
        print("|---|---|---|")
        for name, cmd in runs.items():
            wall, rss = timed(cmd)
            print(f"| {name} | {wall:.1f} | {rss:.0f} |", flush=True)
        print(f"\nCT: {'x'.join(map(str, args.shape))} voxels, int16, LPS; "
              f"{(tmp / 'ct' / 'ct.nii.gz').stat().st_size / 2**20:.0f} MB gzipped")


if __name__ == "__main__":
    main()
