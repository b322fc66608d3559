"""Errors a user can act on, and the exit codes they map to.

Anything raised as :class:`UsageError` is a mistake in what the user asked for (a path, a name,
a setting): the CLI prints its one-line message and exits 2, without a traceback.

The core speaks its own vocabulary: a message names a setting in backquotes, as the Python API
spells it (```batch_size` must be at least 1``). ``str(error)`` reads "batch_size must be at
least 1"; the command line shows the flag instead (:meth:`UsageError.for_cli`: "--batch-size
must be at least 1").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURES = 1  # some images failed, or an evaluation gate failed
EXIT_USAGE = 2  # bad arguments, configuration, model, layer, method or checkpoint
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM: timeout, docker stop, Kubernetes, SLURM


class CamcliError(Exception):
    """Base class of camcli's own errors."""

    exit_code = EXIT_FAILURES


class OutputError(CamcliError):
    """The run's results cannot be written where they belong (its CSV vanished with the output
    folder, the disk refused a file the whole run needs): what it explained is not all on disk;
    exit code 1."""


_SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


class UsageError(CamcliError):
    """The request cannot be carried out as asked; exit code 2."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(_SETTING.sub(r"\1", message))
        self.template = message

    @property
    def settings(self) -> list[str]:
        """The settings the message speaks of."""
        return _SETTING.findall(self.template)

    def for_cli(self) -> str:
        """The message with each setting written as its command-line flag."""
        return as_flags(self.template)


class UsageErrors(UsageError):
    """Several mistakes found at once (every check that needs no model runs before any fails), one line each."""

    def __init__(self, errors: list[UsageError]) -> None:
        super().__init__("\n".join(e.template for e in errors))
        self.errors = errors


def gather(*checks) -> None:
    """Run every check (a callable that may raise :class:`UsageError`); raise what they found together:
    a run that would fail for three reasons says all three before anything is loaded. A check's
    errors about settings an earlier check already refused are left out (``alpha`` nan is "not a
    finite number", not also "not between 0 and 1")."""
    found: list[UsageError] = []
    for check in checks:
        named = {name for e in found for name in e.settings}
        try:
            check()
        except UsageError as e:
            found.extend(x for x in getattr(e, "errors", [e])
                         if not (x.settings and set(x.settings) <= named) and x.template not in
                         {f.template for f in found})
    if len(found) == 1:
        raise found[0]
    if found:
        raise UsageErrors(found)


def as_flags(template: str) -> str:
    """A message in the core's vocabulary with each `setting` written as its flag (the command line's log)."""
    return _SETTING.sub(lambda m: "--" + m.group(1).replace("_", "-"), template)


def first_line(e: BaseException) -> str:
    """An exception's message in one line (its type's name when it has none): what a one-line error quotes."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


def unknown(kind: str, name: str, choices: Iterable[str], hint: str = "", listed: int = 0) -> UsageError:
    """``UsageError`` for an unknown name, suggesting the closest valid ones; with none close, up to
    ``listed`` of the valid names (the labels there are)."""
    choices = list(choices)
    near = closest(name, choices) or closest(name.lower(), choices)
    msg = f"unknown {kind} {name!r}"
    if near:
        msg += "; did you mean " + ", ".join(repr(c) for c in near) + "?"
    elif listed and choices:
        more = f" and {len(choices) - listed} more" if len(choices) > listed else ""
        msg += f"; the {len(choices)} {kind.split()[-1]}s are {', '.join(repr(c) for c in choices[:listed])}{more}"
    if hint:
        msg += f" {hint}"
    return UsageError(msg)
