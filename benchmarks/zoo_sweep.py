"""Every torchvision classifier, explained with default settings: does each one give a map?

For each model of ``torchvision.models.list_models(module=torchvision.models)`` this builds the
architecture with seeded random weights (no download), runs ``camcli.explain`` on one image
with the default layer and the chosen methods, and records the default layer, how its output
reads as a map, the seconds the run took, and whether every map came out (or which were empty,
or why the run was refused). Classic CAM runs in its own call, since it is refused on models
without a GAP + linear head. The result is a Markdown table (docs/models.md holds one).

torchvision starts some heads at zero (ViT): every map of such a model is blank, whatever the
layer, so those heads get seeded random weights and reach camcli as a ``--checkpoint``.

    python benchmarks/zoo_sweep.py --out zoo.md                         # all 80, every method
    python benchmarks/zoo_sweep.py --models resnet18,vit_b_16 --methods gradcam,scorecam

Score-CAM costs one forward per channel (up to 2,048 on these models): on a CPU, pass
``--max-n`` (Faster Score-CAM). Ablation-CAM runs only the part of each model after its default
layer (``benchmarks/tail_sweep.py``: every torchvision classifier is cut there), so it is cheap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import camcli  # noqa: E402
from camcli.engine.methods import available  # noqa: E402
from camcli.errors import UsageError  # noqa: E402
from camcli.engine.methods.cam import linear_head  # noqa: E402
from camcli.engine.layer_names import display_name  # noqa: E402
from camcli.models.layer_search import trace_layers  # noqa: E402

IMAGE = ROOT / "sample_images" / "single" / "circle_07.jpg"


def weights_file(name: str, folder: Path) -> str | None:
    """A checkpoint with a random head for models torchvision starts with an all-zero head."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    head = linear_head(model)
    if head is None or bool(head[1].weight.detach().any()):
        return None
    torch.nn.init.normal_(head[1].weight, std=0.01)
    path = folder / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def sweep_one(name: str, methods: list[str], max_n: int | None, folder: Path) -> dict:
    row = {"model": name}
    checkpoint = weights_file(name, folder)
    common = dict(model=name, workers=0, batch_size=1, device="cpu", quiet=True,
                  max_n=max_n if "scorecam" in methods else None)
    common.update(checkpoint=checkpoint) if checkpoint else common.update(weights="none")
    torch.manual_seed(0)
    started = time.perf_counter()
    try:
        run = camcli.explain(str(IMAGE), method=methods, **common)
        results = list(run)
        row["seconds"] = time.perf_counter() - started
        maps = [m for r in results for m in r.maps]
        failed = [r.error for r in results if r.status != "ok"]
        row["layer"] = maps[0].layer if maps else "-"
        row["map"] = "x".join(map(str, maps[0].layer_map.shape)) if maps else "-"
        empty = [m.method for m in maps if m.empty]
        row["result"] = (f"error: {failed[0]}" if failed else
                         f"{len(maps) - len(empty)}/{len(maps)} maps" + (f"; empty: {', '.join(empty)}" if empty else ""))
    except Exception as e:  # noqa: BLE001 - a sweep records every failure and goes on
        row.update(seconds=time.perf_counter() - started, layer="-", map="-",
                   result=f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    row["output"] = _output(name, row["layer"])
    try:
        torch.manual_seed(0)
        cam = list(camcli.explain(str(IMAGE), method="cam", **dict(common, max_n=None)))
        row["cam"] = "yes" if cam and cam[0].status == "ok" else "error"
    except UsageError as e:
        row["cam"] = "refused" if "method 'cam' needs" in str(e) else f"error: {str(e)[:80]}"
    return row


def _output(name: str, layer: str) -> str:
    """How the default layer's output reads (``tokens 50x768 -> 7x7``), from a dummy forward."""
    if layer == "-":
        return "-"
    model = torchvision.models.get_model(name, weights=None).eval()
    info = next((i for i in trace_layers(model, (224, 224)) if i.name == layer), None)
    return info.describe() if info else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated names (default: every classifier)")
    parser.add_argument("--methods", default=",".join(m for m in available() if m != "cam"),
                        help="comma-separated methods run together (cam always runs on its own)")
    parser.add_argument("--max-n", type=int, default=None, help="Faster Score-CAM: channels kept")
    parser.add_argument("--out", type=Path, help="write the Markdown table here as well")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    lines = ["| model | default layer | layer output -> map | seconds | maps | cam |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in sorted(names):
            row = sweep_one(name, methods, args.max_n, Path(folder))
            line = (f"| {name} | `{display_name(row['layer']) if row['layer'] != '-' else '-'}` | {row['output']} | "
                    f"{row['seconds']:.1f} | {row['result']} | {row['cam']} |")
            print(line, flush=True)
            lines.append(line)
            for f in Path(folder).glob("*.pt"):
                f.unlink()
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
