"""A run of ``camcli explain``: :class:`Run` (:mod:`.run`) and its parts, one idea each.

:mod:`.resume` (what is done, the settings fingerprint), :mod:`.shards` (splitting and merging),
:mod:`.ordered_writer` (background writing in input order), :mod:`.manifest` (``run.json``).
"""

from camcli.run.run import Run, RunSummary
from camcli.run.shards import merge_parts

__all__ = ["Run", "RunSummary", "merge_parts"]
