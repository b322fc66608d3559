"""Every torchvision classifier loads a user state dict of itself through camcli.

For each architecture: build it with 10 classes (seeded random weights), save its state dict
(inception_v3 and googlenet without their auxiliary heads, as inference checkpoints are), then
``camcli.load_model(name, checkpoint=...)`` must read the class count from the file, load it
strictly and give the same logits as the model that was saved. Prints one line per model and
the time it took; exits 1 if any failed. tests/test_checkpoints.py runs the same check on every
architecture below 100 M parameters; this script covers all of them.

    python benchmarks/checkpoint_sweep.py [--max-params 1000] [--only regnet,inception]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camcli.models import classification_models, load_model  # noqa: E402

#: a fixed input size where the architecture demands one (ViTs), else a small one
FIXED = {"vit": 224, "swin": 224, "maxvit": 224}
WITHOUT_AUX = {"inception_v3": {"aux_logits": False, "init_weights": False}, "googlenet": {"aux_logits": False, "init_weights": False}}


def input_side(name: str) -> int:
    for prefix, side in FIXED.items():
        if name.startswith(prefix):
            return side
    return 96 if name != "inception_v3" else 96


def check(name: str, folder: Path) -> str:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **WITHOUT_AUX.get(name, {})).eval()
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model(name, checkpoint=path)
    if loaded.num_classes != 10:
        return f"read {loaded.num_classes} classes, not 10"
    x = torch.randn(1, 3, input_side(name), input_side(name), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours, theirs = loaded.model(x), model(x)
    if not torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4):
        return f"logits differ by {float((ours - theirs).abs().max()):.2e}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-params", type=float, default=1e9, help="skip models above this many millions")
    parser.add_argument("--only", default="", help="comma-separated name prefixes")
    args = parser.parse_args()
    names = [n for n in classification_models() if not args.only or n.startswith(tuple(args.only.split(",")))]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            with torch.device("meta"):
                try:
                    params = sum(p.numel() for p in torchvision.models.get_model(name, weights=None).parameters())
                except (NotImplementedError, RuntimeError):
                    params = 0
            if params / 1e6 > args.max_params:
                print(f"skip {name} ({params / 1e6:.0f} M parameters)")
                continue
            started = time.perf_counter()
            try:
                problem = check(name, Path(tmp))
            except Exception as e:  # report and go on: the sweep lists every failure
                problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            failed += bool(problem)
            print(f"{'FAIL' if problem else 'ok  '} {name:<24} {time.perf_counter() - started:6.1f} s {problem}", flush=True)
            (Path(tmp) / f"{name}.pth").unlink(missing_ok=True)
    print(f"{len(names)} architectures, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
