"""Where Ablation-CAM runs only the model after the layer: every torchvision classifier, at its default layer.

For each model of ``torchvision.models.list_models(module=torchvision.models)`` this builds the
architecture with seeded random weights (no download), finds camcli's default layer, tries to cut
the model there (``camcli.engine.tail``) and checks the cut against the whole model on one random
image, as Ablation-CAM does before using it. Prints a Markdown table and a count.

    python benchmarks/tail_sweep.py                   # all 80, about 5 minutes on 2 cores
    python benchmarks/tail_sweep.py --models resnet18,vit_b_16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from camcli.engine.methods.base import model_logits  # noqa: E402
from camcli.engine.tail import model_tail  # noqa: E402
from camcli.engine.layer_names import display_name  # noqa: E402
from camcli.models.layer_search import default_layer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma-separated names (default: every classifier)")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    print("| model | default layer | cut | seconds |")
    print("|---|---|---|---|", flush=True)
    cut = 0
    for name in names:
        torch.manual_seed(0)
        t = time.perf_counter()
        model = torchvision.models.get_model(name, num_classes=10).eval()
        size = 299 if name == "inception_v3" else 224
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            layer = default_layer(model, (size, size))
            tail = model_tail(model, layer)
            if tail is None:
                verdict = "no: not traceable there, or a value crosses the layer"
            elif tail.reproduces(model, x, model_logits):
                verdict = "yes"
                cut += 1
            else:
                verdict = "no: the cut does not reproduce the model"
        print(f"| {name} | `{display_name(layer)}` | {verdict} | {time.perf_counter() - t:.1f} |", flush=True)
    print(f"\n{cut} of {len(names)} models are cut at their default layer")


if __name__ == "__main__":
    main()
