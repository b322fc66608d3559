"""Continuing a killed run: which images are done, and which batches must be recomputed.

``run-settings.json`` holds the fingerprint of the settings that shape a run's outputs; a
resumed run must match it. It also records the presentation settings (overlay look, gallery,
panels: ``PRESENTATION_KEYS``), which a resumed run may change: the images finished earlier keep
their files, and the log says what changed. An image counts as done when all its rows are in the CSV (one per method x layer, for each class
it explains: the ``targets`` column; each box of a detection run: ``detections``), all ``ok``,
and every file they name exists. A resumed run writes byte for byte what an uninterrupted run
would have written (see :func:`whole_batches`).
"""

from __future__ import annotations

import json
import os
from itertools import groupby
from pathlib import Path

from camcli.engine.discovery import RUN_MARK
from camcli.errors import UsageError
from camcli.models import LoadedModel
from camcli.models.checkpoints import file_sha256
from camcli.output.csvfile import read_rows
from camcli.output.rows import PredictionRow
from camcli.settings import OUTPUT_KEYS, PRESENTATION_KEYS, ExplainSettings

SETTINGS_FILE = RUN_MARK  # its presence marks an output folder that discovery does not walk


def fingerprint(settings: ExplainSettings, loaded: LoadedModel | None = None) -> dict:
    """The settings that decide what a run writes (compared on resume); the checkpoint by its SHA-256,
    for your own models the class, the factory file's SHA-256 or the module's weights (``model_*``),
    a similarity's reference image or embedding and the labels file by their SHA-256."""
    values = {k: getattr(settings, k) for k in OUTPUT_KEYS}
    if loaded is not None:
        values.update(loaded.identity())
        reference = settings.target_image or settings.target_embedding
        if reference:  # a similarity's reference by content: the same path may hold another image
            values["target_reference_sha256"] = file_sha256(reference)
        if isinstance(settings.labels, (str, os.PathLike)) and Path(settings.labels).is_file():  # edited in place: the CSV would mix two label sets
            values["labels_sha256"] = file_sha256(settings.labels)
    return json.loads(json.dumps(values, default=str))


#: where run-settings.json keeps the presentation settings (not part of the fingerprint)
PRESENTATION = "presentation"


def presentation(settings: ExplainSettings) -> dict:
    """The settings that only change how results are shown, as run-settings.json records them."""
    return json.loads(json.dumps({k: getattr(settings, k) for k in PRESENTATION_KEYS}, default=str))


def presentation_changes(out: Path, settings: ExplainSettings) -> list[str]:
    """``alpha (0.5 -> 0.7)`` for each presentation setting that differs from the earlier run's."""
    saved_path = out / SETTINGS_FILE
    if not saved_path.is_file():
        return []
    saved = read_json_file(saved_path).get(PRESENTATION)
    if not isinstance(saved, dict):
        return []
    now = presentation(settings)
    return [f"{k} ({saved[k]!r} -> {now[k]!r})" for k in now if k in saved and saved[k] != now[k]]


def read_json_file(path: Path) -> dict:
    """A JSON object camcli wrote; a damaged or foreign file is a one-line ``UsageError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is damaged (invalid JSON at line {e.lineno}: {e.msg}); remove it, or use "
                         "`overwrite` to start afresh") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a camcli file (expected a JSON object)")
    return data


def finished_rows(out: Path, csv_name: str, expected: dict, maps_per_image: int) -> list[PredictionRow]:
    """Rows of the images an earlier run finished with these settings; refuse when the settings differ."""
    saved_path = out / SETTINGS_FILE
    if not saved_path.is_file():
        if (out / csv_name).exists():
            raise UsageError(f"cannot resume in {out}: {SETTINGS_FILE} is missing (not a camcli output folder?)")
        return []
    saved = read_json_file(saved_path)
    # a setting newer than the earlier run's camcli counts as its default there
    defaults = fingerprint(ExplainSettings())
    saved = {k: saved.get(k, defaults.get(k)) for k in expected} | saved
    saved.pop(PRESENTATION, None)
    diff = [f"{k} ({saved.get(k)!r} -> {expected.get(k)!r})" for k in expected if saved.get(k) != expected.get(k)]
    if diff:
        raise UsageError(f"cannot resume in {out}: settings differ from the earlier run: {', '.join(diff)}. "
                         "Use the same settings, or `overwrite` to start afresh.")
    _header, rows = read_rows(out / csv_name)
    keep = []
    for _path, group in groupby(rows, key=lambda r: r.path):
        group = list(group)
        explained = group[0].explained_count  # classes (multi-label runs) or boxes (detection) in the image
        if len(group) == max(1, maps_per_image * explained) and \
                all(r.ok and r.explained_count == explained for r in group) and \
                all((out / f).is_file() for r in group for f in r.files()):
            keep += group
    return keep


def whole_batches(batches: list[list], done: set[str]) -> list[list]:
    """The batches that hold an image still to do, whole.

    A resumed run puts the finished images that shared a batch with unfinished ones through the
    shared forward again (and then drops them), so every image is computed in the same batch as
    in an uninterrupted run: batched kernels round differently for different batch shapes, and a
    resumed run must write byte for byte what the whole run would have written. Per-image
    passes (Score-CAM's masks, Ablation-CAM's channels) are not repeated for them.
    """
    return [batch for batch in batches if any(i.rel not in done for i in batch)]
