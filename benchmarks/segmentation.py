"""A map for every class found: camcli against pytorch-grad-cam's semantic-segmentation recipe, on the
same model, layer, images and classes, each in a child process of this one (time and peak memory).

    python benchmarks/segmentation.py               # about 6 minutes on 2 cores
    python benchmarks/segmentation.py --images 2    # quicker

The model is torchvision's full-size ``deeplabv3_resnet50`` at its 520 px input with seeded random
weights, its classifier biased towards three classes so that each image has several classes to
explain (no weights are downloaded here; speed does not depend on what the weights learnt). The
peer recipe is its tutorial's: a forward for the predicted masks, then one ``GradCAM`` call per
class with ``SemanticSegmentationTarget`` (that class's mask) at ``backbone.layer4``. camcli's
:class:`~camcli.engine.segmentation.SegmentationExplainer` takes the same preprocessed images in
batches: one forward per batch, one partial backward per class rank, on the model as ``camcli
explain`` prepares it (BatchNorm folded into its convolutions except at the layer, channels-last
memory). The plain forward of the segmenter (as given) is the floor. Maps are compared class by class (Pearson r), and each child's peak
resident memory (``ru_maxrss``) is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

ROOT = Path(__file__).resolve().parents[1]
ARCH, LAYER, SIDE = "deeplabv3_resnet50", "backbone.layer4", 520


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.get_model(ARCH, weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    with torch.no_grad():  # three classes compete at every pixel: masks of several classes per image
        m.classifier[4].bias[:] = -20.0
        m.classifier[4].bias[[0, 12, 15]] = 0.0
    return m.eval()


def inputs(n: int) -> torch.Tensor:
    from PIL import Image

    from camcli.engine.framing import resize_for_model

    found = sorted((ROOT / "sample_images").rglob("*.jpg"))[:n]
    x = torch.stack([torch.from_numpy(resize_for_model(np.asarray(Image.open(p).convert("RGB")), (SIDE, SIDE)))
                     .permute(2, 0, 1) for p in found]).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def classes_of(out: torch.Tensor) -> list[int]:
    """The classes found in one image's (K, h, w) scores, largest mask first (1% or more)."""
    pred = out.argmax(0)
    counts = torch.bincount(pred.flatten(), minlength=out.shape[0]).float() / pred.numel()
    found = [c for c in range(out.shape[0]) if counts[c] >= 0.01]
    return sorted(found, key=lambda c: (-float(counts[c]), c))


def run_peer(m, x: torch.Tensor, batch: int) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    class Out(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, y):
            return self.inner(y)["out"]
    wrapped = Out(m)
    maps = {}
    for i in range(x.shape[0]):
        with torch.no_grad():
            out = wrapped(x[i:i + 1])[0]
        pred = out.argmax(0)
        for c in classes_of(out):
            with GradCAM(model=wrapped, target_layers=[m.backbone.layer4]) as cam:
                maps[f"{i}-{c}"] = cam(input_tensor=x[i:i + 1],
                                       targets=[SemanticSegmentationTarget(c, (pred == c).float().numpy())])[0]
    return maps


def run_camcli(m, x: torch.Tensor, batch: int) -> dict:
    from camcli.engine.methods import get_method
    from camcli.engine.segmentation import SegmentationExplainer
    from camcli.models.batchnorm_folding import fold_batchnorm

    # the model as `camcli explain` prepares it: BatchNorm folded (not at the layer), channels-last
    fold_batchnorm(m, keep=[LAYER])
    m.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    labels = [f"class_{i}" for i in range(21)]
    explainer = SegmentationExplainer(m, [LAYER], [get_method("gradcam")], labels, background=True)
    explainer.validate((SIDE, SIDE), "cpu")
    maps = {}
    for s in range(0, x.shape[0], batch):
        for j, image in enumerate(explainer(x[s:s + batch])):
            for seg, per_class in zip(image.segments, image.maps):
                small = per_class[("gradcam", LAYER)][0]
                maps[f"{s + j}-{seg.index}"] = F.interpolate(small[None, None], size=(SIDE, SIDE), mode="bilinear",
                                                              align_corners=False)[0, 0].numpy()
    return maps


def run_floor(m, x: torch.Tensor, batch: int) -> dict:
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch):
            m(x[s:s + batch])
    return {}


PARTS = {"pytorch-grad-cam": run_peer, "camcli": run_camcli, "forward only": run_floor}


def child(part: str, n: int, batch: int, out: Path) -> None:
    m, x = model(), inputs(n)
    with torch.inference_mode():
        m(x[:1])  # warm-up
    started = time.perf_counter()
    maps = PARTS[part](m, x, batch)
    seconds = time.perf_counter() - started
    np.savez(out, **maps)
    print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--maps", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.part:
        child(a.part, a.images, a.batch, a.maps)
        return
    figures, found = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in PARTS:
            path = Path(tmp) / f"{part.replace(' ', '_')}.npz"
            done = subprocess.run([sys.executable, __file__, "--part", part, "--images", str(a.images), "--batch",
                                   str(a.batch), "--maps", str(path)], capture_output=True, text=True, check=True)
            figures[part] = json.loads(done.stdout.strip().splitlines()[-1])
            found[part] = dict(np.load(path))
    peer, ours = found["pytorch-grad-cam"], found["camcli"]
    shared = sorted(set(peer) & set(ours))
    rs = [float(np.corrcoef(peer[k].ravel(), ours[k].ravel())[0, 1]) for k in shared
          if peer[k].std() > 0 and ours[k].std() > 0]
    floor = figures["forward only"]["seconds"]
    print(f"{ARCH} at {SIDE} px, Grad-CAM at {LAYER}, {a.images} images, batch {a.batch}, "
          f"{len(ours)} class maps ({len(ours) / a.images:.1f} per image); {torch.get_num_threads()} threads")
    for part, f in figures.items():
        print(f"  {part:<17} {f['seconds'] / a.images:6.2f} s/image  {f['seconds'] / floor:5.2f}x the forward  "
              f"peak RSS {f['maxrss_mb']:6.0f} MB")
    print(f"  camcli is {figures['pytorch-grad-cam']['seconds'] / figures['camcli']['seconds']:.1f}x faster per image "
          f"than pytorch-grad-cam's recipe; same classes: {set(peer) == set(ours)}; maps r: min "
          f"{min(rs):.4f}, mean {np.mean(rs):.4f} over {len(rs)} (non-constant) maps")


if __name__ == "__main__":
    main()
