"""Errors a user can act on, and the exit codes they map to.

Anything raised as :class:`UsageError` is a mistake in what the user asked for (a path, a name,
a setting): the CLI prints its one-line message and exits 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURES = 1  # some images failed (or, later, an evaluation gate failed)
EXIT_USAGE = 2  # bad arguments, configuration, model, layer, method or checkpoint
EXIT_INTERRUPTED = 130


class CamcliError(Exception):
    """Base class of camcli's own errors."""

    exit_code = EXIT_FAILURES


class UsageError(CamcliError):
    """The request cannot be carried out as asked; exit code 2."""

    exit_code = EXIT_USAGE


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Valid names close to ``name``: fuzzy matches first, then names that contain it."""
    choices = list(dict.fromkeys(choices))
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    lowered = name.lower()
    for c in choices:
        if len(found) >= n:
            break
        if lowered and lowered in c.lower() and c not in found:
            found.append(c)
    return found


def unknown(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UsageError:
    """``UsageError`` for an unknown name, suggesting the closest valid ones."""
    near = closest(name, choices)
    msg = f"unknown {kind} {name!r}"
    if near:
        msg += "; did you mean " + ", ".join(repr(c) for c in near) + "?"
    if hint:
        msg += f" {hint}"
    return UsageError(msg)
