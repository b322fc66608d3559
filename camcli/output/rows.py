"""The rows of a run's CSV, typed, with their CSV spelling in one place: one class per task.

:class:`Row` holds the columns every task's rows share (where the image is, its status and
size, the map's method, layer and files); :class:`PredictionRow` (a classifier's
``predictions.csv``), :class:`DetectionRow` (``detections.csv``) and :class:`SegmentRow`
(``segments.csv``) add their own and nothing of the others'. A row is what the run writes, what
``--resume`` and ``camcli merge`` read back, and what the gallery, ``--json`` and ``camcli
evaluate`` read: every reader gets ints, floats, bools and boxes, never cells. Which columns a
file has depends on its task and settings (:func:`columns`); a cell is empty when its value is
``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in original-image pixels

BASE_COLUMNS = ("index", "path", "width", "height", "pred_index", "pred_label", "score", "target_index",
                "target_label", "target_score", "method", "layer", "output", "heatmap", "panel", "empty_map",
                "warning", "status", "error", "note")
BOX_COLUMNS = ("box_status", "box_x0", "box_y0", "box_x1", "box_y1")
#: a detection run's file (detections.csv): one row per image x box x method x layer, no class columns
DETECTION_COLUMNS = ("index", "path", "width", "height", "detections", "det_rank", "det_index", "det_label",
                     "det_score", "det_x0", "det_y0", "det_x1", "det_y1", "method", "layer", "energy_in_box",
                     "output", "heatmap", "empty_map", "warning", "status", "error", "note")
DET_BOX = ("det_x0", "det_y0", "det_x1", "det_y1")
#: a segmentation run's file (segments.csv): one row per image x class found x method x layer
SEGMENTATION_COLUMNS = ("index", "path", "width", "height", "segments", "seg_rank", "seg_index", "seg_label",
                        "pixel_share", "mean_probability", "region", "method", "layer", "energy_in_mask", "output",
                        "heatmap", "mask", "empty_map", "warning", "status", "error", "note")
#: a volume run's file (volumes.csv): one row per scan x method x layer; the peak voxel as the scan
#: file indexes it (i, j, k) and where it lies in the scanner's RAS millimetres (x, y, z)
VOLUME_COLUMNS = ("index", "path", "shape", "spacing", "orientation", "resampled", "pred_index", "pred_label",
                  "score", "method", "layer", "peak_i", "peak_j", "peak_k", "peak_x", "peak_y", "peak_z", "output",
                  "heatmap", "empty_map", "warning", "status", "error", "note")
#: a 3D segmentation run's file (volume_segments.csv): one row per scan x class found x method x
#: layer; ``mask`` the scan's predicted labels as NIfTI on its grid
VOLUME_SEGMENT_COLUMNS = ("index", "path", "shape", "spacing", "orientation", "resampled", "segments", "seg_rank",
                          "seg_index", "seg_label", "voxel_share", "mean_probability", "method", "layer", "peak_i",
                          "peak_j", "peak_k", "peak_x", "peak_y", "peak_z", "output", "heatmap", "mask", "empty_map",
                          "warning", "status", "error", "note")
#: a video run's file (clips.csv): one row per video x clip window x method x layer; times in
#: seconds, frames counted from 0, ``end_frame`` the window's last; the peak is the frame where
#: the map is strongest and the pixel (in the video's frames) where it is, ``strip`` a picture of
#: evenly spaced frames beside the overlay video
VIDEO_COLUMNS = ("index", "path", "width", "height", "fps", "frames", "clip", "clips", "start_frame", "end_frame",
                 "start_time", "end_time", "pred_index", "pred_label", "score", "method", "layer", "peak_frame",
                 "peak_time", "peak_x", "peak_y", "output", "strip", "heatmap", "empty_map", "warning", "status",
                 "error", "note")
DetBox = tuple[float, float, float, float]  # a detector's box, x0, y0, x1, y1 in original-image pixels


def columns(topk: int, boxes: bool = False, rotated: bool = False, all_boxes: bool = False,
            targets: bool = False) -> list[str]:
    """The header of a classifier's predictions file written with these settings (``targets``: a
    run that may explain several classes per image has a ``targets`` column, how many its image
    got). A detection or segmentation run's header is its fixed DETECTION_COLUMNS or
    SEGMENTATION_COLUMNS."""
    cols = list(BASE_COLUMNS)
    if targets:
        cols.insert(cols.index("target_score") + 1, "targets")
    if boxes:
        cols += [*BOX_COLUMNS, *(["box_rotated"] if rotated else []), *(["boxes_all"] if all_boxes else [])]
    for k in range(1, topk + 1):
        cols += [f"top{k}_index", f"top{k}_label", f"top{k}_score"]
    return cols


def cell(value) -> str:
    """How camcli writes a value into a CSV cell: empty for None, true/false, 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass
class Row:
    """One image x method x layer of any task's CSV (or one error row for an image that could not
    be explained): the columns every task shares."""

    index: int
    path: str
    status: str = "ok"
    error: str = ""
    note: str = ""
    width: int | None = None
    height: int | None = None
    method: str | None = None
    layer: str | None = None  # as displayed: layer4[1]
    output: str | None = None  # overlay path relative to the output folder
    heatmap: str | None = None
    empty_map: bool | None = None
    warning: str | None = None  # the method's assumptions that fail at this layer for this image

    #: fields spelled over several columns (or none), written by :meth:`_more_cells` and read by :meth:`_more_fields`
    _COMPOSITE: ClassVar[tuple[str, ...]] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def explained(self) -> bool:
        """The image was decoded and explained (its row has a prediction), even if a file failed."""
        return self.width is not None

    @property
    def explained_count(self) -> int:
        """How many classes, boxes or regions the image's rows explain (0: none was found)."""
        return 1

    @property
    def explained_label(self) -> str | None:
        """What this row's map explains, in a word (a class, a box's class); captions show it."""
        return None

    @property
    def explained_box(self) -> tuple[float, float, float, float] | None:
        """Where the thing this row's map explains is, in the image's pixels, when the row knows it
        (a detector's box); the audit reads evidence away from it as it reads evidence off a truth box."""
        return None

    def files(self) -> list[str]:
        """Output files this row names, relative to the output folder."""
        return [f for f in (self.output, self.heatmap) if f]

    def cells(self) -> dict[str, str]:
        """Every column this row has a value for, spelled as in the CSV."""
        out = {f.name: cell(getattr(self, f.name)) for f in fields(self) if f.name not in self._COMPOSITE}
        out.update(self._more_cells())
        return out

    def _more_cells(self) -> dict[str, str]:
        return {}

    @classmethod
    def from_cells(cls, cells: Mapping[str, str]):
        """The row a CSV line spells; ``ValueError`` when a cell does not parse."""
        kw = {f.name: _parse(cells[f.name], str(f.type)) for f in fields(cls)
              if f.name not in cls._COMPOSITE and f.name in cells}
        return cls(**kw, **cls._more_fields(cells))

    @classmethod
    def _more_fields(cls, cells: Mapping[str, str]) -> dict:
        return {}


@dataclass
class PredictionRow(Row):
    """A classifier's row (predictions.csv): the prediction, the class this map explains, top-k,
    and with ``boxes`` the box found in the map."""

    pred_index: int | None = None
    pred_label: str | None = None
    score: float | None = None
    target_index: int | None = None
    target_label: str | None = None
    target_score: float | None = None
    #: how many classes the image's rows explain (only in runs that may explain several)
    targets: int | None = None
    panel: str | None = None
    box_status: str | None = None
    box: Box | None = None
    box_rotated: tuple[tuple[float, float], ...] | None = None
    boxes_all: tuple[Box, ...] | None = None
    topk: tuple[tuple[int, str, float], ...] = field(default_factory=tuple)  # (index, label, probability)

    _COMPOSITE: ClassVar[tuple[str, ...]] = ("targets", "box", "box_rotated", "boxes_all", "topk")

    @property
    def explained_count(self) -> int:
        return self.targets or 1

    @property
    def explained_label(self) -> str | None:
        return self.target_label

    def files(self) -> list[str]:
        return [f for f in (self.output, self.heatmap, self.panel) if f]

    def _more_cells(self) -> dict[str, str]:
        out = {"targets": cell(self.targets)} if self.targets is not None else {}
        if self.box is not None:
            out.update(zip(BOX_COLUMNS[1:], map(cell, self.box)))
        if self.box_rotated is not None:
            out["box_rotated"] = " ".join(f"{x:.1f},{y:.1f}" for x, y in self.box_rotated)
        if self.boxes_all is not None:
            out["boxes_all"] = ";".join(",".join(map(str, b)) for b in self.boxes_all)
        for k, (idx, label, prob) in enumerate(self.topk, start=1):
            out.update({f"top{k}_index": cell(idx), f"top{k}_label": label, f"top{k}_score": cell(prob)})
        return out

    @classmethod
    def _more_fields(cls, cells: Mapping[str, str]) -> dict:
        kw = {}
        if "targets" in cells:
            kw["targets"] = _parse(cells["targets"], "int | None")
        if cells.get("box_x0"):
            kw["box"] = tuple(int(cells[c]) for c in BOX_COLUMNS[1:])
        if cells.get("box_rotated"):
            kw["box_rotated"] = tuple(tuple(float(v) for v in pair.split(",")) for pair in cells["box_rotated"].split())
        if cells.get("boxes_all"):
            kw["boxes_all"] = tuple(tuple(int(v) for v in b.split(",")) for b in cells["boxes_all"].split(";"))
        topk, k = [], 1
        while cells.get(f"top{k}_index"):
            topk.append((int(cells[f"top{k}_index"]), cells[f"top{k}_label"], float(cells[f"top{k}_score"])))
            k += 1
        kw["topk"] = tuple(topk)
        return kw


@dataclass
class VolumeRow(Row):
    """A volume's row (volumes.csv): one scan x method x layer. ``output`` is the picture of the
    planes through the peak, ``heatmap`` the map as NIfTI on the scan's grid."""

    shape: str | None = None  # the scan file's voxels, 512x512x400
    spacing: str | None = None  # millimetres per voxel along the file's axes, 0.7x0.7x1.25
    orientation: str | None = None  # the file's axis codes (LPS, RAS, ...)
    #: the scan resampled to the model's input: its voxels per scan voxel along the file's axes, 0.0625x0.0625x0.08
    resampled: str | None = None
    pred_index: int | None = None
    pred_label: str | None = None
    score: float | None = None
    peak_i: int | None = None
    peak_j: int | None = None
    peak_k: int | None = None
    peak_x: float | None = None
    peak_y: float | None = None
    peak_z: float | None = None

    @property
    def explained(self) -> bool:
        return self.pred_index is not None


    @property
    def explained_label(self) -> str | None:
        return self.pred_label


@dataclass
class VolumeSegmentRow(VolumeRow):
    """A 3D segmenter's row (volume_segments.csv): one scan x class found x method x layer; the
    peak is the class's map's. ``mask``: the scan's predicted labels, NIfTI on its grid."""

    segments: int | None = None  # how many classes the scan has; the row explains the seg_rank-th
    seg_rank: int | None = None  # 1: the class with the scan's largest predicted volume
    seg_index: int | None = None
    seg_label: str | None = None
    voxel_share: float | None = None  # share of the scan predicted as this class
    mean_probability: float | None = None  # the class's mean probability over its predicted voxels
    mask: str | None = None

    @property
    def explained(self) -> bool:
        return self.shape is not None  # read and segmented, whether or not a class was found

    @property
    def explained_count(self) -> int:
        return self.segments if self.segments is not None else 1

    @property
    def explained_label(self) -> str | None:
        return self.seg_label

    def files(self) -> list[str]:
        return [*super().files(), *([self.mask] if self.mask else [])]


@dataclass
class DetectionRow(Row):
    """A detector's row (detections.csv): one image x box x method x layer."""

    #: how many boxes the image has, and the one this row explains
    detections: int | None = None
    det_rank: int | None = None  # 1: the image's best box
    det_index: int | None = None  # its class index
    det_label: str | None = None
    det_score: float | None = None
    det_box: DetBox | None = None
    energy_in_box: float | None = None  # share of the map's sum inside the box

    _COMPOSITE: ClassVar[tuple[str, ...]] = ("det_box",)

    @property
    def explained_count(self) -> int:
        return self.detections if self.detections is not None else 1

    @property
    def explained_label(self) -> str | None:
        return self.det_label

    @property
    def explained_box(self) -> DetBox | None:
        return self.det_box

    def _more_cells(self) -> dict[str, str]:
        return {c: f"{v:.1f}" for c, v in zip(DET_BOX, self.det_box)} if self.det_box is not None else {}

    @classmethod
    def _more_fields(cls, cells: Mapping[str, str]) -> dict:
        return {"det_box": tuple(float(cells[c]) for c in DET_BOX)} if cells.get("det_x0") else {}


@dataclass
class SegmentRow(Row):
    """A segmenter's row (segments.csv): one image x class found x method x layer."""

    #: how many classes the image has, and the one this row explains
    segments: int | None = None
    seg_rank: int | None = None  # 1: the class with the image's largest mask
    seg_index: int | None = None
    seg_label: str | None = None
    pixel_share: float | None = None  # share of the image predicted as this class
    mean_probability: float | None = None  # the class's mean probability over its mask
    region: str | None = None  # what the score sums over, when not the class's own mask
    energy_in_mask: float | None = None  # share of the map's sum inside the class's predicted mask
    mask: str | None = None  # the image's predicted label mask (``save_mask``)

    @property
    def explained_count(self) -> int:
        return self.segments if self.segments is not None else 1

    @property
    def explained_label(self) -> str | None:
        return self.seg_label

    def files(self) -> list[str]:
        return [f for f in (self.output, self.heatmap, self.mask) if f]


@dataclass
class VideoRow(Row):
    """A video's row (clips.csv): one clip window x method x layer. ``output`` is the overlay video
    (WebM, the source's frame rate), ``strip`` its evenly spaced frames as one PNG."""

    fps: float | None = None
    frames: int | None = None  # the video's
    clip: int | None = None  # this window, from 0
    clips: int | None = None  # the video's windows
    start_frame: int | None = None
    end_frame: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    pred_index: int | None = None
    pred_label: str | None = None
    score: float | None = None
    peak_frame: int | None = None
    peak_time: float | None = None
    peak_x: int | None = None
    peak_y: int | None = None
    strip: str | None = None

    @property
    def explained_count(self) -> int:
        return self.clips or 1

    @property
    def explained_label(self) -> str | None:
        return self.pred_label

    def files(self) -> list[str]:
        return [f for f in (self.output, self.strip, self.heatmap) if f]


def _parse(text: str, kind: str):
    if kind in ("int", "str"):  # required fields
        return int(text) if kind == "int" else text
    if text == "":
        return None
    if "bool" in kind:
        if text not in ("true", "false"):
            raise ValueError(f"not true or false: {text!r}")
        return text == "true"
    if "int" in kind:
        return int(text)
    if "float" in kind:
        return float(text)
    return text
