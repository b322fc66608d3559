"""Judge the demo segmenter on scenes it was not trained on, through camcli.

    python scripts/evaluate_segmenter.py            # 200 held-out scenes of one to three objects
    python scripts/evaluate_segmenter.py --write    # and record the figures in demo/segmenter.json

Scenes come from ``heldout_scenes.py`` (written apart from the training generator: another
drawing library, other backgrounds and distractors) with their truth label masks (each object's
own pixels), are explained by ``camcli explain --config configs/demo-segment.toml --save-mask
--save-heatmap npy`` and scored by ``camcli evaluate``: the code paths a user runs. Figures: the
segmenter's mIoU (background included) and IoU per class, and for each explained class the truth
holds, the pointing game (strict: the map's maximum inside the class's truth mask) and the share
of the map's energy inside it, for several methods at the config's layer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))
import heldout_scenes  # noqa: E402
from shapes_segmenter import CLASSES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_scenes(folder: Path, count: int, seed: int) -> tuple[Path, Path]:
    """Scenes as PNG files and their truth label masks (PNG of class indices) by the same names."""
    rng = np.random.default_rng(seed)
    images, truth = folder / "scenes", folder / "truth"
    images.mkdir()
    truth.mkdir()
    for i in range(count):
        img, objects = heldout_scenes.heldout_scene(rng, 1 + i % 3)
        labels = np.zeros(img.shape[:2], np.uint8)
        for o in objects:
            labels[o.mask] = CLASSES.index(o.label)
        name = f"{1 + i % 3}_{i:04d}.png"
        Image.fromarray(img).save(images / name)
        Image.fromarray(labels).save(truth / name)
    return images, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--method", default="gradcam,layercam,hirescam,eigencam", help="methods to judge")
    ap.add_argument("--write", action="store_true", help="record the figures in demo/segmenter.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, truth = write_scenes(tmp, a.scenes, a.seed)
        out = tmp / "run"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "camcli", "explain", str(images), "--config",
                        str(ROOT / "configs" / "demo-segment.toml"), "--save-heatmap", "npy", "--save-mask",
                        "--out", str(out), "--method", a.method, "--quiet"], check=True)
        seconds = time.perf_counter() - started
        strict = json.loads(subprocess.run(
            [sys.executable, "-m", "camcli", "evaluate", str(out), "--truth", str(truth), "--json", "--quiet",
             "--pointing-tolerance", "0"], check=True, capture_output=True, text=True).stdout)
    s = strict["segmenter"]
    maps = {f"{m['method']}@{m['layer']}": {"classes": m["images"], "strict_pointing": round(m["pointing"], 4),
                                            "energy_in_truth_mask": round(m["energy"], 4)}
            for m in strict["summaries"]}
    figures = {"command": "python scripts/evaluate_segmenter.py --write", "heldout_scenes": a.scenes,
               "objects_per_scene": "1 to 3", "seed": a.seed, "miou": round(s["miou"], 4),
               "pixel_accuracy": round(s["pixel_accuracy"], 4),
               "iou_per_class": {k: round(v, 4) for k, v in s["per_class_iou"].items()},
               "maps": maps, "explain_seconds": round(seconds, 1)}
    print(json.dumps(figures, indent=2))
    if a.write:
        path = ROOT / "demo" / "segmenter.json"
        info = json.loads(path.read_text(encoding="utf-8"))
        info["evaluation"] = figures
        path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
