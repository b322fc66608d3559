"""Make the pictures the README and docs show, from real camcli output on sample_images/.

    python scripts/readme_pictures.py                   # every picture
    python scripts/readme_pictures.py --only segmentation

Writes ``docs/demo.jpg`` (Grad-CAM overlays of the demo run: ten single-object scenes and two
two-object scenes, as ``camcli explain sample_images/ --config configs/demo.toml`` writes them)
and ``docs/panel.jpg`` (``--panel`` for one two-object scene with several methods, explaining
the class of the object named in the file), from the demo classifier; and ``docs/detection.jpg``
(the demo detector on the eight two-object scenes and four single ones, every box's Grad-CAM map
combined on one overlay, as ``--config configs/demo-detect.toml --detection-maps combined``
writes them); and ``docs/segmentation.jpg`` (the demo segmenter on four two-object scenes: its
predicted mask, then each class's Grad-CAM overlay with the class's mask outlined, as
``--config configs/demo-segment.toml --save-mask`` writes them). Run after retraining a demo model.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import cv2
import numpy as np

import camcli

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
CONFIG = ROOT / "configs" / "demo.toml"
DETECT_CONFIG = ROOT / "configs" / "demo-detect.toml"
SEGMENT_CONFIG = ROOT / "configs" / "demo-segment.toml"
TILE_HEIGHT = 220
PANEL_METHODS = ["cam", "gradcam", "gradcam++", "layercam", "scorecam", "eigencam", "ablationcam", "fullgrad"]


def montage(tiles: list[np.ndarray], width: int = 1400, gap: int = 6) -> np.ndarray:
    """Rows of tiles of one height, packed left to right, each row padded to ``width``."""
    rows, row, used = [], [], 0
    for t in tiles:
        if row and used + t.shape[1] > width:
            rows.append(row)
            row, used = [], 0
        row.append(t)
        used += t.shape[1] + gap
    rows.append(row)
    out = []
    for r in rows:
        line = np.full((TILE_HEIGHT, width, 3), 255, np.uint8)
        x = 0
        for t in r:
            w = min(t.shape[1], width - x)
            line[:, x:x + w] = t[:, :w]
            x += t.shape[1] + gap
        out += [line, np.full((gap, width, 3), 255, np.uint8)]
    return np.vstack(out[:-1])


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["segmentation"], help="make only this picture")
    if ap.parse_args().only == "segmentation":
        with tempfile.TemporaryDirectory() as tmp:
            segmentation_picture(Path(tmp) / "segment")
        print("wrote docs/segmentation.jpg")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        list(camcli.explain(SAMPLES, config=CONFIG, out=out, workers=0, quiet=True))
        rows = list(csv.DictReader(open(out / "predictions.csv", newline="")))
        singles = [r for r in rows if r["path"].startswith("single/")][:10]
        pairs = [r for r in rows if r["path"].startswith("pairs/")][:2]
        tiles = []
        for r in singles + pairs:
            img = cv2.imread(str(out / r["output"]))
            scale = TILE_HEIGHT / img.shape[0]
            tiles.append(cv2.resize(img, (max(1, round(img.shape[1] * scale)), TILE_HEIGHT),
                                    interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(ROOT / "docs" / "demo.jpg"), montage(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])

        scene = sorted((SAMPLES / "pairs").iterdir())[0]
        target = scene.stem.split("_")[0]
        panel_out = Path(tmp) / "panel"
        list(camcli.explain(scene, config=CONFIG, out=panel_out, method=PANEL_METHODS, target=target, panel=True,
                            workers=0, quiet=True))
        panel = cv2.imread(str(next((panel_out / "panels").rglob("*.png"))))
        cv2.imwrite(str(ROOT / "docs" / "panel.jpg"), panel, [cv2.IMWRITE_JPEG_QUALITY, 85])
        detection_picture(Path(tmp) / "detect")
        segmentation_picture(Path(tmp) / "segment")
    print(f"wrote docs/demo.jpg, docs/panel.jpg (panel: {scene.name}, explaining {target}), docs/detection.jpg and "
          "docs/segmentation.jpg")


def detection_picture(out: Path) -> None:
    """docs/detection.jpg: the demo detector's combined overlays of the two-object samples and four single ones."""
    scenes = sorted((SAMPLES / "pairs").iterdir()) + sorted((SAMPLES / "single").iterdir())[:4]
    list(camcli.explain(scenes, config=DETECT_CONFIG, out=out, detection_maps="combined", workers=0, quiet=True))
    rows = list(csv.DictReader(open(out / "detections.csv", newline="")))
    tiles = []
    for output in dict.fromkeys(r["output"] for r in rows if r["output"]):
        img = cv2.imread(str(out / output))
        scale = TILE_HEIGHT / img.shape[0]
        tiles.append(cv2.resize(img, (max(1, round(img.shape[1] * scale)), TILE_HEIGHT), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(ROOT / "docs" / "detection.jpg"), montage(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])


def segmentation_picture(out: Path) -> None:
    """docs/segmentation.jpg: for four two-object samples, the demo segmenter's predicted mask and
    each class's Grad-CAM overlay with its mask outlined."""
    scenes = sorted((SAMPLES / "pairs").iterdir())[:4]
    list(camcli.explain(scenes, config=SEGMENT_CONFIG, out=out, save_mask=True, workers=0, quiet=True))
    rows = list(csv.DictReader(open(out / "segments.csv", newline="")))
    tiles = []

    def tile(img: np.ndarray) -> np.ndarray:
        scale = TILE_HEIGHT / img.shape[0]
        return cv2.resize(img, (max(1, round(img.shape[1] * scale)), TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == path and r["output"]]
        from PIL import Image

        mask = np.asarray(Image.open(out / mine[0]["mask"]).convert("RGB"))[..., ::-1]
        tiles.append(tile(np.ascontiguousarray(mask)))
        tiles += [tile(cv2.imread(str(out / r["output"]))) for r in mine]
    cv2.imwrite(str(ROOT / "docs" / "segmentation.jpg"), montage(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main()
