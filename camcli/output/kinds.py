"""What a run writes, by task: its CSV's name and columns, and how one image's files and rows are
written. A task adds its kind here (and its writer module); the run, the ordered writer, resume,
shards and ``camcli merge`` take it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from camcli.engine.stream import ImageResult
from camcli.output.detection_writer import write_detection_image
from camcli.output.image_writer import write_image
from camcli.output.rows import PredictionRow, columns
from camcli.output.segmentation_writer import write_segmentation_image
from camcli.settings import ExplainSettings


@dataclass(frozen=True)
class OutputKind:
    """How a task's run is written."""

    stem: str  # the CSV's name without .csv: predictions, detections, segments
    #: the CSV's header for these settings; ``several``: a run that may explain several classes per image
    header: Callable[[ExplainSettings, bool], list[str]]
    #: one image's files, and its rows (runs in the writer threads)
    write: Callable[[ImageResult, Path, ExplainSettings], list[PredictionRow]]


KINDS: dict[str, OutputKind] = {
    "classification": OutputKind(
        "predictions",
        lambda s, several: columns(s.topk, s.boxes, s.box_rotated, s.box_mode == "all", targets=several),
        write_image),
    "detection": OutputKind(
        "detections",
        lambda _s, _several: columns(1, detection=True),
        write_detection_image),
    "segmentation": OutputKind(
        "segments",
        lambda _s, _several: columns(1, segmentation=True),
        write_segmentation_image),
}
