"""Where the time goes on one photo: each stage of camcli's work, timed on its own.

    python benchmarks/photo_stages.py                      # one 6000x4000 JPEG (24 MP)
    python benchmarks/photo_stages.py --size 8660x5773     # 50 MP

Generates one seeded photo (as benchmarks/photos.py does), then times, each over several
repeats (median, 2 threads as camcli's writers and loaders see them): decoding it (camcli's
decoder: Pillow, EXIF, RGB), fitting it to the model input, one resnet50 forward and partial
backward (Grad-CAM, seeded random weights), reading the 7x7 map back at full size, blending the
coloured map over the photo (one piece, and a strip of rows at a time as camcli renders), and
encoding the overlay as PNG (camcli's writer), JPEG and WebP (quality 90). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from photos import make_photos  # noqa: E402

from camcli.engine.explainer import Explainer  # noqa: E402
from camcli.engine.framing import fit_to_model  # noqa: E402
from camcli.engine.images import decode  # noqa: E402
from camcli.engine.methods import get_method  # noqa: E402
from camcli.engine.stream import MapResult  # noqa: E402
from camcli.output.render import encode_picture, overlay, overlay_strips, to_uint8  # noqa: E402


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    folder = Path(tempfile.mkdtemp(prefix="camcli-stages-"))
    make_photos(folder, 1, (w, h))
    path = str(next(folder.glob("*.jpg")))
    r = args.repeats
    rows = []
    t, (rgb, _) = median_time(lambda: decode(path), r)
    rows.append(("decode (Pillow, EXIF, RGB)", t))
    t, (small, _) = median_time(lambda: fit_to_model(rgb, (224, 224), "stretch"), r)
    rows.append(("fit to the 224 px input", t))
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    explainer = Explainer(model, ["layer4.2"], [get_method("gradcam")])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255 - mean) / std
    explainer(x)
    t, result = median_time(lambda: explainer(x), r)
    rows.append(("resnet50 forward + partial backward (batch 1)", t))
    m = MapResult("gradcam", "layer4.2", result.maps[("gradcam", "layer4.2")].maps[0].numpy(), False, (h, w))
    t, heat = median_time(m.upsampled, r)
    rows.append(("map read back at full size (float32)", t))
    t, level = median_time(lambda: to_uint8(heat), r)
    rows.append(("map to 0..255 levels", t))
    t, _ = median_time(lambda: overlay(rgb, level, "jet", 0.5), r)
    rows.append(("colour and blend, one piece", t))
    t, picture = median_time(lambda: overlay_strips(rgb, m.row_reader(), "jet", 0.5), r)
    rows.append(("read back + colour + blend in strips (camcli)", t))
    for fmt in ("png", "jpg", "webp"):
        t, data = median_time(lambda: encode_picture(picture, fmt, 90), r)
        rows.append((f"encode {fmt} ({len(data) / 1e6:.1f} MB)", t))
    print(f"# one {w}x{h} photo ({w * h / 1e6:.0f} MP), median of {r}; 2 threads")
    print("| stage | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} |")


if __name__ == "__main__":
    main()
