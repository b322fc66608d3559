"""A map for every box: camcli against pytorch-grad-cam's Faster R-CNN recipe, on the same model,
layer, images and boxes, in one process; and camcli's peak memory against the folder's size.

    python benchmarks/detection.py                 # about 10 minutes on 2 cores
    python benchmarks/detection.py --images 4      # quicker

The model is torchvision's full-size ``fasterrcnn_resnet50_fpn`` (800 px) with seeded random
weights and a box classifier biased towards one class, so that it keeps boxes (no weights are
downloaded here; speed does not depend on what the weights learnt). For every image the peer
recipe (its tutorial's: a forward for the detections, then one CAM call per box with
``FasterRCNNBoxScoreTarget`` for that box) is timed against camcli's Explainer on batches of the
same images (one forward per batch, one partial backward per box rank). Grad-CAM is timed at
``backbone.fpn.layer_blocks.3`` (a tensor layer, where pytorch-grad-cam takes gradients) and
Eigen-CAM at ``backbone`` (FPN levels, fasterrcnn_reshape_transform). The plain forward of the
detector is the floor. Maps are compared box by box (Pearson r; random weights make degenerate
maps, so parity is the tests' business, on trained weights too). Eigen-CAM's map does not depend
on the box, so the peer makes it once per image, as its tutorial does.

Memory: ``camcli explain`` runs in child processes on N, 2N and 4N copies of the images; their peak
resident memory (``ru_maxrss``) should not grow with the folder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARCH = "fasterrcnn_resnet50_fpn"


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.get_model(ARCH, weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        m.roi_heads.box_predictor.cls_score.bias[1] = 6.0
    return m.eval()


def images(n: int) -> list[Path]:
    found = sorted((ROOT / "sample_images").rglob("*.jpg")) + sorted((ROOT / "sample_images").rglob("*.png"))
    return found[:n]


def tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def peer(m, x: torch.Tensor, boxes, labels, method: str) -> list[np.ndarray]:
    from pytorch_grad_cam import EigenCAM, GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    if method == "gradcam":  # a map per box: one call per box's target
        cam = GradCAM(m, [m.backbone.fpn.layer_blocks[3]])
        maps = []
        for box, lab in zip(boxes, labels):
            try:
                maps.append(cam(x[None], targets=[FasterRCNNBoxScoreTarget([int(lab)], [np.asarray(box)])])[0])
            except RuntimeError:  # its target found no box of that class with IoU > 0.5: a constant, no gradient
                maps.append(None)
    else:  # Eigen-CAM ignores the target: one call per image serves every box (the tutorial's recipe)
        cam = EigenCAM(m, [m.backbone], reshape_transform=fasterrcnn_reshape_transform)
        one = cam(x[None], targets=[FasterRCNNBoxScoreTarget(labels, [np.asarray(b) for b in boxes])])[0]
        maps = [one] * len(boxes)
    cam.activations_and_grads.release()
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--boxes", type=int, default=3, help="boxes explained per image")
    ap.add_argument("--batch", type=int, default=3)
    a = ap.parse_args()
    torch.set_grad_enabled(True)
    from camcli.engine.detection import DetectionExplainer
    from camcli.engine.methods import get_method
    from camcli.engine.framing import Frame, map_to_image

    m = model()
    paths = images(a.images)
    xs = [tensor(p) for p in paths]
    labels = [f"c{i}" for i in range(91)]
    print(f"{ARCH} (random weights), {len(xs)} images, {a.boxes} boxes each, batches of {a.batch}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")

    started = time.perf_counter()
    with torch.inference_mode():
        for x in xs:
            m([x])
    floor = (time.perf_counter() - started) / len(xs)
    print(f"plain forward (the floor): {floor:.2f} s per image")

    for method, layer in (("gradcam", "backbone.fpn.layer_blocks.3"), ("eigencam", "backbone")):
        explainer = DetectionExplainer(m, [layer], [get_method(method)], labels, max_detections=a.boxes)
        started = time.perf_counter()
        ours = []
        for k in range(0, len(xs), a.batch):
            ours += explainer(xs[k:k + a.batch])
        camcli_s = (time.perf_counter() - started) / len(xs)
        started = time.perf_counter()
        rs, unmatched = [], 0
        for x, found in zip(xs, ours):
            with torch.no_grad():
                m([x])  # the recipe's forward for the detections
            boxes = [d.box for d in found.detections]
            theirs = peer(m, x, boxes, [d.index for d in found.detections], method)
            for mine, t in zip(found.maps, theirs):
                if t is None:
                    unmatched += 1
                    continue
                small, _empty, _failed, (extent, inset) = mine[(method, layer)]
                frame = Frame(inset[1], inset[0], inset[1] + found.valid[1], inset[0] + found.valid[0])  # as overlays
                mine_full = map_to_image(small, frame, extent, t.shape).numpy()
                if mine_full.std() > 0 and t.std() > 0:
                    rs.append(float(np.corrcoef(mine_full.ravel(), t.ravel())[0, 1]))
        peer_s = (time.perf_counter() - started) / len(xs)
        kept = sum(len(f.detections) for f in ours)
        print(f"{method:8s} at {layer}: camcli {camcli_s:.2f} s/image ({camcli_s / floor:.2f}x the floor), "
              f"pytorch-grad-cam {peer_s:.2f} s/image: camcli {peer_s / camcli_s:.2f}x faster; {kept} boxes, "
              f"map r min {min(rs):.4f} mean {np.mean(rs):.4f} over {len(rs)} boxes"
              + (f"; {unmatched} box(es) the peer's target did not find again alone" if unmatched else ""))

    with tempfile.TemporaryDirectory() as tmp:
        peaks = []
        for copies in (1, 2, 4):
            folder = Path(tmp) / f"in{copies}"
            folder.mkdir()
            for c in range(copies):
                for p in paths:
                    shutil.copy(p, folder / f"{c}_{p.name}")
            checkpoint = Path(tmp) / "detector.pt"
            if not checkpoint.exists():
                torch.save(m.state_dict(), checkpoint)
            cmd = [sys.executable, "-m", "camcli", "explain", str(folder), "-m", ARCH, "--checkpoint", str(checkpoint),
                   "--max-detections", str(a.boxes), "--batch-size", str(a.batch), "--workers", "0", "--quiet",
                   "--out", str(Path(tmp) / f"out{copies}")]
            # each run under a wrapper of its own, whose children's peak is that run's alone
            probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            done = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
            peaks.append((copies * len(paths), int(done.stdout.split()[-1]) / 1024))
        for n, mb in peaks:
            print(f"camcli explain on {n} images: peak RSS {mb:.0f} MB")


if __name__ == "__main__":
    main()
