"""What evaluate measures, as objects: each metric has a name, a heading, a direction and a format.

A summary (:class:`~camcli.evaluation.scoring.Summary`) holds a method x layer's values; the
tables on the command line, the report page and the gates list whatever metrics the summaries
hold values for, in the order of :data:`METRICS`, instead of naming columns. A task's scorer with
a metric of its own registers it (:func:`register_metric`) and puts its values in the summaries'
``extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """One number evaluate reports per method x layer."""

    key: str  # the summary's field (or ``extra`` key) and the JSON key
    title: str  # its column heading
    higher_is_better: bool
    percent: bool = False  # a share, shown as a percentage
    #: the gate that bounds it (``min_pointing``): a minimum when higher is better, else a maximum
    gate: str | None = None
    #: what its gate's message calls it ("pointing game")
    spoken: str = ""
    #: reads the value from a summary where it is not a field of its own (ROAD's combined score)
    read: Callable[[Any], float | None] | None = None

    def value(self, summary) -> float | None:
        if self.read is not None:
            return self.read(summary)
        if self.key in getattr(summary, "extra", {}):
            return summary.extra[self.key]
        return getattr(summary, self.key, None)

    def fails(self, value: float, limit: float) -> bool:
        return value < limit if self.higher_is_better else value > limit

    def gate_message(self, method: str, layer: str, value: float | None, limit: float, why_none: str) -> str | None:
        """The gate's failure for one method x layer, or ``None`` when it holds."""
        flag = f"--{self.gate.replace('_', '-')}" if self.gate else self.key
        if value is None:
            return f"{method} @ {layer}: {self.spoken or self.title} cannot be measured ({why_none}) but {flag} {limit} was asked"
        if self.fails(value, limit):
            sign = "<" if self.higher_is_better else ">"
            return f"{method} @ {layer}: {self.spoken or self.title} {value:.3f} {sign} {flag} {limit}"
        return None


def _road(s) -> float | None:
    return s.road["combined"] if s.road else None


def _sanity(key: str) -> Callable[[Any], float | None]:
    return lambda s: s.sanity[key] if s.sanity else None


#: every metric, in the order tables show them
METRICS: list[Metric] = [
    Metric("mean_iou", "mean IoU", True, gate="min_iou", spoken="mean IoU"),
    Metric("localisation", "IoU≥0.5", True, percent=True),
    Metric("pointing", "pointing", True, percent=True, gate="min_pointing", spoken="pointing game"),
    Metric("energy", "energy", True, percent=True),
    Metric("accuracy", "accuracy", True, percent=True, gate="min_accuracy", spoken="accuracy"),
    Metric("average_drop", "avg drop", False, percent=True),
    Metric("increase_in_confidence", "incr. conf.", True, percent=True),
    Metric("deletion_auc", "deletion", False),
    Metric("insertion_auc", "insertion", True),
    Metric("road", "ROAD", True, read=_road),
    Metric("sanity_spearman", "rand. ρ", False, gate="max_sanity_similarity", spoken="Spearman after randomisation",
           read=_sanity("final_spearman")),
    Metric("sanity_ssim", "rand. SSIM", False, read=_sanity("final_ssim")),
]


def register_metric(metric: Metric) -> Metric:
    """Add a metric (a task's own); one of the same key is replaced."""
    METRICS[:] = [m for m in METRICS if m.key != metric.key] + [metric]
    return metric


def unregister_metric(key: str) -> None:
    """Remove a metric added with :func:`register_metric` (tests, notebooks)."""
    METRICS[:] = [m for m in METRICS if m.key != key]


def metric(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def produced(summaries: Iterable) -> list[Metric]:
    """The metrics at least one summary holds a value for, in table order."""
    summaries = list(summaries)
    return [m for m in METRICS if any(m.value(s) is not None for s in summaries)]


def maps_only(summaries: Iterable) -> list[Metric]:
    """The metrics of the maps the summaries hold, without ``mean_iou``: in a detection or
    segmentation run's summaries that is the model's (its boxes', its masks'), reported apart."""
    return [m for m in produced(summaries) if m.key != "mean_iou"]


def summary_table(title: str, head: list[str], rows: list[list[str]]):
    """A rich table of summaries (:func:`camcli.evaluation.metrics.table_rows`): method and layer
    to the left, figures to the right."""
    from rich.table import Table

    table = Table(title=title, title_style="bold")
    for c in head:
        table.add_column(c, justify="left" if c in ("method", "layer") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def table_rows(summaries: Sequence, fmt: Callable[[float | None, bool], str], counted: str = "images",
               metrics: Sequence[Metric] | None = None) -> tuple[list[str], list[list[str]]]:
    """(headings, rows) of a summary table: method, layer, what was counted (images, boxes,
    classes), then each metric the summaries hold."""
    metrics = produced(summaries) if metrics is None else metrics
    head = ["method", "layer", counted, *(m.title for m in metrics)]
    return head, [[s.method, s.layer, str(s.images), *(fmt(m.value(s), m.percent) for m in metrics)]
                  for s in summaries]


def print_segmenter(segmenter, console, fmt, unit: str, voxels: bool = False) -> None:
    """A segmenter's mIoU and accuracy over the run's ``unit`` (images, scans), then its IoU per class."""
    from rich.table import Table

    d = segmenter
    console.print(f"segmenter: mIoU {fmt(d.miou, True)} over {len(d.per_class)} class(es) in {d.images} "
                  f"{unit}(s); {'voxel' if voxels else 'pixel'} accuracy {fmt(d.pixel_accuracy, True)}", markup=False)
    classes = Table(title="IoU per class", title_style="bold")
    classes.add_column("class")
    classes.add_column("IoU", justify="right")
    for name, value in d.per_class.items():
        classes.add_row(name, fmt(value, True))
    console.print(classes)
