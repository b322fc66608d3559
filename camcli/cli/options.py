"""Command-line options made from the settings fields, so that each option is declared once.

:func:`settings_options` gives a command one Typer option per named setting: its flag (and
``--no-`` form for switches), short flag, help text with the default as shown, and help panel
all come from the field's metadata in :mod:`camcli.settings.fields`. The command receives them
as keyword arguments, ``None`` meaning "not given".
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Optional

import typer

from camcli.settings.fields import FIELDS, kind, shown_default

_TYPES = {bool: Optional[bool], int: Optional[int], float: Optional[float], list: Optional[list[str]],
          str: Optional[str]}


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_help(name: str) -> str:
    """The help text of a setting's option, with its default (escaped from Rich markup)."""
    shown = shown_default(name)
    return FIELDS[name].metadata["help"] + (f" \\[default: {shown}]" if shown else "")


def annotation(name: str):
    meta = FIELDS[name].metadata
    t = kind(name)
    decls = [f"{flag(name)}/--no-{flag(name)[2:]}" if t is bool else flag(name)]
    if meta["short"]:
        decls.append(meta["short"])
    return Annotated[_TYPES[t], typer.Option(*decls, help=option_help(name), rich_help_panel=meta["panel"],
                                             show_default=False)]


def settings_options(names: Iterable[str]) -> Callable:
    """Decorator: add an option per setting in ``names`` to a command that takes ``**settings``."""
    names = list(names)

    def decorate(func: Callable) -> Callable:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation(n))
                 for n in names]
        params = own + added
        func.__signature__ = inspect.Signature(params, return_annotation=None)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func
    return decorate
