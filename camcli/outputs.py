"""Everything written to the output folder: paths inside it, atomic files, the CSV, run.json.

Every output path is built from an image's relative path and checked to stay inside the
output folder. Files are written to a temporary name and renamed, so a killed run never
leaves a half-written PNG; CSV rows are flushed as images finish.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

from camcli.errors import UsageError
from camcli.layers import file_safe

BASE_COLUMNS = ["index", "path", "width", "height", "pred_index", "pred_label", "score", "target_index", "target_label",
                "target_score", "method", "layer", "output", "heatmap", "panel", "empty_map", "status", "error", "note"]


BOX_COLUMNS = ["box_status", "box_x0", "box_y0", "box_x1", "box_y1"]


def csv_columns(topk: int, boxes: bool = False, rotated: bool = False, all_boxes: bool = False) -> list[str]:
    cols = list(BASE_COLUMNS)
    if boxes:
        cols += BOX_COLUMNS + (["box_rotated"] if rotated else []) + (["boxes_all"] if all_boxes else [])
    for k in range(1, topk + 1):
        cols += [f"top{k}_index", f"top{k}_label", f"top{k}_score"]
    return cols


def inside(out_dir: Path, rel: str) -> Path:
    """``out_dir / rel``, refusing anything that would land outside ``out_dir``."""
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if not parts or any(p in ("..", "") for p in parts) or PurePosixPath(rel).is_absolute():
        raise ValueError(f"unsafe output path {rel!r}")
    target = (out_dir / Path(*parts)).resolve()
    root = out_dir.resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"output path {rel!r} escapes the output folder")
    return target


def overlay_rel(image_rel: str, method: str, layer: str) -> str:
    """``overlays/a/cat.jpg.gradcam@layer4.1.png``: mirrors the input tree, names method and layer."""
    return f"overlays/{image_rel}.{method.replace('+', 'pp')}@{file_safe(layer)}.png"


def heatmap_rel(image_rel: str, method: str, layer: str, fmt: str) -> str:
    """``heatmaps/a/cat.jpg.gradcam@layer4.1.npy`` (or ``.png`` for png16)."""
    return f"heatmaps/{image_rel}.{method.replace('+', 'pp')}@{file_safe(layer)}.{'npy' if fmt == 'npy' else 'png'}"


def panel_rel(image_rel: str) -> str:
    return f"panels/{image_rel}.png"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


class PredictionsCSV:
    """``predictions.csv``: the header once, then rows appended and flushed as images finish.

    ``keep`` rows (from a resumed run) are written first, through a temporary file and a rename,
    so that a half-written last line of the killed run never survives.
    """

    def __init__(self, path: Path, columns: list[str], keep: list[dict] | None = None) -> None:
        self.path = path
        self.columns = columns
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for row in keep or []:
                w.writerow(row)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")

    def write(self, row: dict) -> None:
        self._writer.writerow({k: csv_cell(row.get(k)) for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def csv_cell(value) -> str:
    """How camcli writes a value into a CSV cell: empty for None, true/false, 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def prepare_out_dir(out: Path) -> Path:
    """Create the output folder; refuse a path that exists and is not a folder."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {out}: {e.strerror or e}") from e
    return out


def ndjson_record(result, rows: list[dict]) -> dict:
    """One ``--json`` line for an image: prediction, explained class, and one entry per map."""
    first = rows[0]
    record = {"type": "image", "path": result.item.rel, "status": first["status"] if all(
        r["status"] == "ok" for r in rows) else "error", "error": "; ".join(r["error"] for r in rows if r.get("error"))}
    if result.status == "ok":
        record.update(width=result.width, height=result.height, note=result.note or None,
                      prediction={"index": result.pred_index, "label": result.pred_label, "score": result.score},
                      target={"index": result.target_index, "label": result.target_label, "score": result.target_score},
                      topk=[{"index": i, "label": lab, "score": p} for i, lab, p in result.topk])
        maps = []
        for r in rows:
            entry = {"method": r.get("method"), "layer": r.get("layer"), "overlay": r.get("output") or None,
                     "heatmap": r.get("heatmap") or None, "empty_map": r.get("empty_map")}
            if r.get("box_status"):
                entry["box"] = ([r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"]]
                                if r["box_status"] == "ok" else None)
            maps.append(entry)
        record["maps"] = maps
        record["panel"] = first.get("panel") or None
    return record


def read_complete_rows(path: Path) -> tuple[list[str], list[dict]]:
    """Header and the rows of a CSV that were written completely (a killed run may leave half a line)."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # drop the unfinished last line
    reader = csv.DictReader(text.splitlines())
    rows = [r for r in reader if None not in r.values() and None not in r]
    return list(reader.fieldnames or []), rows


def sort_csv_by_index(path: Path) -> None:
    """Rewrite a predictions CSV in input order (rows of one image keep their order)."""
    header, rows = read_complete_rows(path)
    rows = sorted(enumerate(rows), key=lambda ir: (int(ir[1]["index"]), ir[0]))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(r for _, r in rows)
    os.replace(tmp, path)


#: what camcli writes into an output folder; --overwrite removes these and nothing else
OWN_OUTPUTS = ("overlays", "heatmaps", "panels", "grid", "predictions.csv", "run.json", "run-settings.json",
               "index.html", "evaluation.csv")


def is_camcli_output(name: str) -> bool:
    return name in OWN_OUTPUTS or (name.startswith("predictions.part-") and name.endswith(".csv")) or \
        (name.startswith("run.part-") and name.endswith(".json")) or \
        (name.startswith(".") and name.endswith(".tmp"))  # our interrupted temporary files only
