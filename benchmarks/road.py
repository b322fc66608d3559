"""ROAD against pytorch-grad-cam's ROADCombined, side by side in one process, on the same maps.

    python benchmarks/road.py                 # 2 maps, about 2 minutes on 2 cores
    python benchmarks/road.py --maps 4 --size 224

Each map is a seeded random 7x7 map upsampled to ``--size`` px (as camcli's layer4 maps are), on a
random image, explained for a seeded random resnet18's top class; both tools score it at 10..90%
(MoRF and LeRF). pytorch-grad-cam
runs ``ROADCombined`` (its SciPy sparse solve per mask); camcli runs ``camcli.evaluation.road``
(conjugate gradients batched over the masks). Times alternate between the tools per map; the
combined scores are printed so that the two can be seen to agree (both add ROAD's noise, so
they differ by a few thousandths).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from camcli.evaluation.road import road


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    peer = ROADCombined(percentiles=[10, 20, 30, 40, 50, 60, 70, 80, 90])
    times = {"camcli": [], "pytorch-grad-cam": []}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, resnet18 at {args.size} px, "
          f"{args.maps} maps")
    print("| map | camcli (s) | pytorch-grad-cam (s) | peer / camcli | camcli combined | peer combined |")
    print("|---|---|---|---|---|---|")
    for i in range(args.maps):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(3, args.size, args.size, generator=g)
        coarse = torch.rand(1, 1, 7, 7, generator=g)
        heat = F.interpolate(coarse, size=(args.size, args.size), mode="bilinear", align_corners=False)[0, 0]
        with torch.no_grad():
            target = int(model(x[None]).argmax())
        t0 = time.perf_counter()
        ours = road(model, x, heat, target, generator=torch.Generator().manual_seed(i)).combined
        t1 = time.perf_counter()
        theirs = float(np.asarray(peer(x[None], heat[None].numpy(), [ClassifierOutputSoftmaxTarget(target)], model))[0])
        t2 = time.perf_counter()
        times["camcli"].append(t1 - t0)
        times["pytorch-grad-cam"].append(t2 - t1)
        print(f"| {i} | {t1 - t0:.1f} | {t2 - t1:.1f} | {(t2 - t1) / (t1 - t0):.2f}x | {ours:.4f} | {theirs:.4f} |",
              flush=True)
    a, b = sum(times["camcli"]), sum(times["pytorch-grad-cam"])
    print(f"| all | {a:.1f} | {b:.1f} | {b / a:.2f}x | | |")


if __name__ == "__main__":
    main()
