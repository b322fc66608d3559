"""``--json``: one object per image as it finishes, then one summary object (NDJSON on stdout)."""

from __future__ import annotations

from camcli.output.rows import PredictionRow
from camcli.tasks import Task


def image_record(rows: list[PredictionRow], task: Task) -> dict:
    """An image's object: path and status, then what its task says of it (the prediction and one
    entry per map for a classifier; per box for a detector, per class found for a segmenter)."""
    first = rows[0]
    record = {"type": "image", "path": first.path, "status": "ok" if all(r.ok for r in rows) else "error",
              "error": "; ".join(r.error for r in rows if r.error)}
    if first.explained:
        record.update(task.json_entries(rows))
    return record


def summary_record(summary) -> dict:
    """The closing object: counts, time, and where the outputs are."""
    return {"type": "summary", "images": summary.images, "ok": summary.ok, "failed": summary.failed,
            "empty_maps": summary.empty_maps, "seconds": round(summary.seconds, 3),
            "interrupted": summary.interrupted, "resumed": summary.resumed,
            "out": str(summary.out) if summary.out else None}
