"""Ground-truth boxes from a CSV file, a Pascal VOC folder or a COCO JSON file.

Every reader returns ``{relative image path: [Box, ...]}`` with pixel coordinates. A
malformed file is a ``UsageError`` naming the file and the line (or annotation) at fault.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from camcli.geometry import Box
from camcli.errors import UsageError

Truth = dict[str, list[Box]]


def read_truth(path: str | Path, normalized: bool = False, sizes: dict[str, tuple[int, int]] | None = None) -> Truth:
    """Dispatch on the path: a folder is VOC, ``.json`` is COCO, anything else is CSV.

    ``normalized`` CSV coordinates (0..1) are scaled with ``sizes`` (path -> (width, height)).
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"ground truth {p} does not exist")
    if p.is_dir():
        return read_voc(p)
    if p.suffix.lower() == ".json":
        return read_coco(p)
    return read_csv_boxes(p, normalized, sizes)


def norm_path(text: str) -> str:
    return PurePosixPath(text.strip().replace("\\", "/")).as_posix().lstrip("./") if text.strip() else ""


def read_csv_boxes(path: Path, normalized: bool = False, sizes: dict[str, tuple[int, int]] | None = None) -> Truth:
    """``path,x0,y0,x1,y1[,label]`` with a header row."""
    out: Truth = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{path}: empty ground-truth CSV")
            cols = [h.strip().lower() for h in header]
            need = ["path", "x0", "y0", "x1", "y1"]
            missing = [c for c in need if c not in cols]
            if missing:
                raise UsageError(f"{path}, line 1: header lacks column(s) {', '.join(missing)} "
                                 "(expected path,x0,y0,x1,y1[,label])")
            at = {c: cols.index(c) for c in need + (["label"] if "label" in cols else [])}
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < len(cols):
                    raise UsageError(f"{path}, line {line}: expected {len(cols)} fields, got {len(row)}")
                try:
                    x0, y0, x1, y1 = (float(row[at[c]]) for c in ("x0", "y0", "x1", "y1"))
                except ValueError:
                    raise UsageError(f"{path}, line {line}: coordinates must be numbers: {row}") from None
                rel = norm_path(row[at["path"]])
                if normalized:
                    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                        raise UsageError(f"{path}, line {line}: normalised coordinates must lie in 0..1")
                    if sizes is None or rel not in sizes:
                        raise UsageError(f"{path}, line {line}: cannot scale normalised box: size of {rel!r} unknown")
                    w, h = sizes[rel]
                    x0, x1, y0, y1 = x0 * w, x1 * w, y0 * h, y1 * h
                if x1 < x0 or y1 < y0:
                    raise UsageError(f"{path}, line {line}: x1 < x0 or y1 < y0 in {row}")
                label = row[at["label"]].strip() if "label" in at and row[at["label"]].strip() else None
                out.setdefault(rel, []).append(Box(x0, y0, x1, y1, label))
    except OSError as e:
        raise UsageError(f"cannot read ground truth {path}: {e.strerror or e}") from e
    except csv.Error as e:
        raise UsageError(f"{path}: malformed CSV: {e}") from e
    return out


def read_voc(folder: Path) -> Truth:
    """Pascal VOC annotation XML files (``<filename>``, ``<object><name>``, ``<bndbox>``)."""
    files = sorted(folder.rglob("*.xml"))
    if not files:
        raise UsageError(f"{folder}: no VOC .xml annotations found")
    out: Truth = {}
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise UsageError(f"{xml}, line {e.position[0]}: malformed XML: {e}") from None
        name = root.findtext("filename")
        if not name:
            raise UsageError(f"{xml}: no <filename>")
        rel = norm_path(name)
        boxes = out.setdefault(rel, [])
        for i, obj in enumerate(root.iter("object"), start=1):
            bb = obj.find("bndbox")
            try:
                coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise UsageError(f"{xml}: object {i} has no valid <bndbox> xmin/ymin/xmax/ymax") from None
            # VOC pixel indices are 1-based and inclusive
            boxes.append(Box(coords[0] - 1, coords[1] - 1, coords[2], coords[3], (obj.findtext("name") or "").strip() or None))
    return out


def read_coco(path: Path) -> Truth:
    """COCO detection JSON: ``images``, ``annotations`` with ``bbox: [x, y, w, h]``, ``categories``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read ground truth {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}, line {e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise UsageError(f"{path}: not COCO JSON (needs 'images' and 'annotations')")
    try:
        files = {img["id"]: norm_path(img["file_name"]) for img in data["images"]}
    except (KeyError, TypeError):
        raise UsageError(f"{path}: every image needs 'id' and 'file_name'") from None
    names = {c.get("id"): c.get("name") for c in data.get("categories", []) if isinstance(c, dict)}
    out: Truth = {f: [] for f in files.values()}
    for i, ann in enumerate(data["annotations"]):
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            rel = files[ann["image_id"]]
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{path}: annotation #{i} needs 'image_id' of a listed image and 'bbox': [x, y, w, h]") from None
        if w < 0 or h < 0:
            raise UsageError(f"{path}: annotation #{i} has a negative width or height")
        out[rel].append(Box(x, y, x + w, y + h, names.get(ann.get("category_id"))))
    return out
