"""Class labels from a text file (one per line) or JSON (a list, or an index -> label mapping)."""

from __future__ import annotations

import json
from pathlib import Path

from camcli.errors import UsageError, UsageErrors, unknown


def read_labels(path: str | Path) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"cannot read labels file {p}: {e.strerror or e}") from e
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"labels file {p}: invalid JSON at line {e.lineno}: {e.msg}") from e
        if isinstance(data, list):
            return [str(x) for x in data]
        if isinstance(data, dict):
            try:
                items = sorted((int(k), v) for k, v in data.items())
            except ValueError as e:
                raise UsageError(f"labels file {p}: JSON object keys must be class indices") from e
            if [k for k, _ in items] != list(range(len(items))):
                raise UsageError(f"labels file {p}: class indices must run 0..{len(items) - 1} without gaps")
            # ImageNet's class index files map to [wnid, name]; take the readable name.
            return [str(v[-1]) if isinstance(v, list) and v else str(v) for _, v in items]
        raise UsageError(f"labels file {p}: expected a JSON list or object")
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise UsageError(f"labels file {p} is empty")
    return labels


def fit_labels(labels: list[str] | None, num_classes: int, source: str) -> list[str]:
    """Labels for every class index; a count mismatch is a usage error, missing labels get ``class_i``.

    A model with one output may have two labels: the binary head's negative and positive class.
    """
    if labels is None:
        return [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes and not (num_classes == 1 and len(labels) == 2):
        raise UsageError(f"{source} has {len(labels)} labels but the model has {num_classes} classes")
    return labels


def given_labels(labels) -> list[str] | None:
    """The ``labels`` setting as a list: a list as it is, a file's lines, or ``None``."""
    if isinstance(labels, list):
        return list(labels)
    return read_labels(labels) if labels else None


#: how many labels an unknown name's message lists when none is close
LISTED_LABELS = 20


def class_indices(spec, labels: list[str]) -> tuple[int, ...]:
    """The ``target`` setting as class indices: indices or label names (case-insensitive), comma-separated.

    An unknown name is refused with the closest labels, or the labels there are when none is close.
    """
    if spec is None:
        return ()
    parts = [str(p).strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if str(p).strip()]
    lowered = [label.lower() for label in labels]
    found: list[int] = []
    wrong: list[UsageError] = []
    for text in parts:
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < len(labels):
                wrong.append(UsageError(f"`target` {index} is out of range: the model has {len(labels)} classes "
                                        f"(0..{len(labels) - 1})"))
                continue
        elif text.lower() in lowered:
            index = lowered.index(text.lower())
        else:
            wrong.append(unknown("`target` label", text, labels, listed=LISTED_LABELS))
            continue
        if index not in found:
            found.append(index)
    if wrong:
        raise wrong[0] if len(wrong) == 1 else UsageErrors(wrong)
    return tuple(found)

