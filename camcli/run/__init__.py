"""A run of ``camcli explain``: :class:`Run` (:mod:`.run`) and its parts, one idea each.

:mod:`.resume` (what is done, the settings fingerprint), :mod:`.shards` (splitting and merging),
:mod:`.ordered_writer` (background writing in input order), :mod:`.manifest` (``run.json``).
The names below are imported on first use, so that :mod:`.shards` serves the command line's
checks before torch is loaded.
"""

_LAZY = {"Run": "camcli.run.run", "RunSummary": "camcli.run.run", "merge_parts": "camcli.run.shards"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'camcli.run' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = ["Run", "RunSummary", "merge_parts"]
