"""Does ``camcli audit`` find a watermark shortcut, and only then? Measured through camcli itself (not run by CI).

    python scripts/evaluate_shortcut.py --variants /tmp/shortcut [--per-class 40] [--write]

``--variants`` holds models trained by ``train_shortcut.py``, each ``NAME.safetensors`` with its
``NAME.json`` (which class carries the watermark and in which corner; ``none`` for a clean twin).
The shipped model, ``demo/shapes_shortcut.safetensors``, is always one of them. For each, held-out
scenes (``heldout_scenes.py``: written apart from the training generator, ``--per-class`` of each
class) are stamped as the model's source stamped its training scenes (the logo class at ``share``,
the others at ``others``; the clean twin's scenes as the first variant's), explained with
``camcli explain`` (Grad-CAM at ``head``, maps saved at the layer's size), and audited by
``camcli audit``, without truth and with the scenes' boxes.

**Detected**: the logo class has a cluster flagged ``fixed-place`` at the watermark's corner.
**False alarms**: flagged clusters of the other classes of every model, and any flag on a clean
twin. Also measured: accuracy on the unstamped held-out scenes, and how often a stamped scene of
another class is called the logo class (how much the model relies on the watermark).
``--share`` stamps fewer of the logo class's held-out scenes than training did, so that its maps
mix the watermark's strategy with the object's and the clustering must tell them apart.
``--write`` keeps the figures in ``demo/shapes_shortcut.json`` (under ``audit``, per share).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from heldout_scenes import CLASSES, heldout_scene  # noqa: E402
from watermark import stamp  # noqa: E402


def scenes(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    out = {c: [] for c in CLASSES}
    while any(len(v) < per_class for v in out.values()):
        img, objects = heldout_scene(rng, 1)
        if len(out[objects[0].label]) < per_class:
            out[objects[0].label].append((img, objects[0].box))
    return out


def write_set(folder: Path, held, logo: str | None, corner: str, share: float, others: float, seed: int):
    """The held-out scenes stamped as the source stamps them; boxes.csv; which were stamped."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines, stamped = ["path,x0,y0,x1,y1,label"], set()
    for c, items in held.items():
        for i, (img, box) in enumerate(items):
            name = f"{c}_{i:03d}.png"
            if logo is not None and rng.random() < (share if c == logo else others):
                img = stamp(img, corner)
                stamped.add(name)
            Image.fromarray(img).save(folder / name)
            lines.append(f"{name},{box[0]},{box[1]},{box[2]},{box[3]},{c}")
    (folder.parent / f"{folder.name}-boxes.csv").write_text("\n".join(lines) + "\n")
    return folder.parent / f"{folder.name}-boxes.csv", stamped


def camcli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camcli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def judge(weights: Path, meta: dict, held, tmp: Path, stamp_like: dict, share: float | None = None) -> dict:
    logo = None if meta["logo_class"] == "none" else meta["logo_class"]
    rule = dict(meta if logo is not None else stamp_like)
    if share is not None:
        rule["share"] = share
    images = tmp / f"{weights.stem}-images"
    boxes, stamped = write_set(images, held, rule["logo_class"] if rule["logo_class"] != "none" else None,
                               rule["corner"], rule["share"], rule["others"], seed=5)
    run = tmp / f"{weights.stem}-run"
    r = camcli("explain", images, "--model", ROOT / "demo" / "shapes_shortcut_net.py:build", "--checkpoint", weights,
               "--labels", ROOT / "demo" / "labels.txt", "--input-size", 224, "--method", "gradcam", "--layer", "head",
               "--save-heatmap", "npy", "--heatmap-size", "layer", "--workers", "0", "--quiet", "--out", run)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    truth = {r["path"]: r["path"].split("_")[0] for r in rows}
    clean = [r for r in rows if r["path"] not in stamped]
    result = {"model": weights.name, "logo_class": meta["logo_class"], "corner": meta.get("corner"),
              "scenes": len(rows), "stamped": len(stamped),
              "accuracy_unstamped": round(float(np.mean([r["pred_label"] == truth[r["path"]] for r in clean])), 4)}
    if logo is not None:
        others = [r for r in rows if r["path"] in stamped and truth[r["path"]] != logo]
        result["stamped_others_called_logo_class"] = (
            round(float(np.mean([r["pred_label"] == logo for r in others])), 4) if others else None)
    for mode, extra in (("no_truth", []), ("boxes", ["--truth", boxes])):
        a = camcli("audit", run, *extra, "--json", "--quiet")
        if a.returncode != 0:
            raise SystemExit(a.stderr)
        data = json.loads(a.stdout)
        flagged = [(c["class"], k) for c in data["classes"] for k in c["clusters"] if k["flags"]]
        hit = logo is not None and any(
            cls == logo and k["where"] == f"{meta['corner']} corner" and any(f["flag"] == "fixed-place" for f in k["flags"])
            for cls, k in flagged)
        members = stamped_in = 0
        logo_id = next((k["cluster"] for cls, k in flagged if hit and cls == logo
                        and k["where"] == f"{meta['corner']} corner"), None)
        if logo_id is not None:
            rows_ = [r for r in csv.DictReader(open(run / "audit.csv")) if r["class"] == logo]
            inside_ = [r["path"] for r in rows_ if r["cluster"] == str(logo_id)]
            members, stamped_in = len(inside_), sum(p in stamped for p in inside_)
            of_class = sum(r["path"] in stamped for r in rows_)
        result[mode] = {
            "detected": hit if logo is not None else None,
            "false_alarms": [{"class": cls, "size": k["size"], "where": k["where"],
                              "flags": [f["flag"] for f in k["flags"]]}
                             for cls, k in flagged if cls != logo or k["where"] != f"{meta.get('corner')} corner"],
            "clusters": {c["class"]: [k["size"] for k in c["clusters"]] for c in data["classes"]},
            "logo_cluster": None if logo_id is None else {
                "size": members, "stamped_members": stamped_in, "purity": round(stamped_in / members, 4),
                "stamped_maps_of_class_in_it": round(stamped_in / of_class, 4) if of_class else None},
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--share", type=float, default=None,
                    help="share of the logo class's held-out scenes stamped (default: as in training, 0.9); "
                         "below it the class's maps mix the watermark's strategy with the object's")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    models = [ROOT / "demo" / "shapes_shortcut.safetensors"] + sorted(args.variants.glob("*.safetensors"))
    metas = [json.loads(m.with_suffix(".json").read_text()) for m in models]
    held = scenes(args.per_class, args.seed)
    first = next(m for m in metas if m["logo_class"] != "none")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for m, meta in zip(models, metas):
            results.append(judge(m, meta, held, Path(tmp), first, args.share))
            print(json.dumps(results[-1]), flush=True)
    logo_models = [r for r in results if r["logo_class"] != "none"]
    summary = {}
    for mode in ("no_truth", "boxes"):
        summary[mode] = {
            "detected": f"{sum(r[mode]['detected'] for r in logo_models)} of {len(logo_models)}",
            "false_alarm_clusters_other_classes": sum(len(r[mode]["false_alarms"]) for r in logo_models),
            "other_classes_audited": sum(len(r[mode]["clusters"]) - 1 for r in logo_models),
            "clean_twin_flags": sum(len(r[mode]["false_alarms"]) for r in results if r["logo_class"] == "none"),
        }
    print(json.dumps(summary, indent=1))
    if args.write:
        out = ROOT / "demo" / "shapes_shortcut.json"
        data = json.loads(out.read_text()) if out.exists() else {}
        key = f"heldout_share_{args.share if args.share is not None else 'as_trained'}"
        data.setdefault("audit", {})[key] = {
            "command": f"python scripts/evaluate_shortcut.py --variants {args.variants} --per-class {args.per_class}"
                       + (f" --share {args.share}" if args.share is not None else "") + " --write",
            "heldout_per_class": args.per_class, "summary": summary, "models": results}
        out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
