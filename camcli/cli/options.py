"""Command-line options made from the settings fields, so that each option is declared once.

:func:`settings_options` gives a command one Typer option per named setting: its flag (and
``--no-`` form for switches), short flag, help text with the default as shown, and help panel
all come from the field's metadata in :mod:`camcli.settings.fields`. The command receives them
as keyword arguments, ``None`` meaning "not given".

``--help`` shows the options most runs use (:data:`COMMON`); ``--help-all`` every one. Options
with fixed values list them (``[choices: a, b, c]``) (:data:`~camcli.settings.checks.CHOICES`), and the
shell completes their values: choices, method and colour-map names, models, a named model's
layers, devices (:mod:`camcli.cli.completion`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Optional

import typer

from camcli.cli import completion
from camcli.settings.checks import CHOICES
from camcli.settings.fields import FIELDS, kind, shown_default

#: the options ``--help`` shows, what most runs set, each in a few words (``--help-all``: every
#: option with its whole text)
COMMON = {
    "out": "Output folder.",
    "resume": "Continue the run in --out.",
    "overwrite": "Replace camcli's outputs in --out.",
    "quiet": "Errors only.",
    "model": "resnet50, timm/NAME, file.py:function (`camcli models`).",
    "weights": "DEFAULT, IMAGENET1K_V1, ... or none.",
    "checkpoint": "Your weights (.pt, .pth, .safetensors).",
    "labels": "Class names: text (one per line) or JSON.",
    "input_size": "Side of the square model input.",
    "method": "CAM method(s), comma-separated (`camcli methods`).",
    "layer": "Target layer(s), e.g. 'layer4[1]' (`camcli layers MODEL`).",
    "target": "Class(es) to explain: indices or label names.",
    "task": "What the model does; auto reads it from the model.",
    "save_mask": "Segmentation: also write each predicted mask.",
    "colormap": "OpenCV colour map: jet, turbo, viridis, ...",
    "save_heatmap": "Also write each raw map under heatmaps/.",
    "html": "Write index.html, a gallery of the run.",
    "batch_size": "Images per forward pass.",
    "device": "auto, cpu, cuda, cuda:N or mps.",
}

#: how ``--help`` ends when it hides options
SHORT_HELP_NOTE = ("Shown: the options most runs use. `--help-all` lists every option (with the method-specific ones); "
                   "docs/usage.md explains each.")

_TYPES = {bool: Optional[bool], int: Optional[int], float: Optional[float], list: Optional[list[str]],
          str: Optional[str]}


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_help(name: str, brief: bool = False) -> str:
    """The help text of a setting's option, with its default (escaped from Rich markup); ``brief``:
    the few words of :data:`COMMON`."""
    shown = shown_default(name)
    text = COMMON[name] if brief and name in COMMON else FIELDS[name].metadata["help"]
    choices = f" \\[choices: {', '.join(CHOICES[name])}]" if name in CHOICES else ""
    return text + choices + (f" \\[default: {shown}]" if shown else "")


def annotation(name: str):
    meta = FIELDS[name].metadata
    t = kind(name)
    decls = [f"{flag(name)}/--no-{flag(name)[2:]}" if t is bool else flag(name)]
    if meta["short"]:
        decls.append(meta["short"])
    return Annotated[_TYPES[t], typer.Option(*decls, help=option_help(name, brief=True), rich_help_panel=meta["panel"],
                                             show_default=False, hidden=name not in COMMON,
                                             autocompletion=completion.for_setting(name))]


def help_all_option(ctx: typer.Context, value: bool) -> None:
    """``--help-all``: the command's help with every option shown."""
    if not value or ctx.resilient_parsing:
        return
    for param in ctx.command.params:
        param.hidden = False
        if param.name in FIELDS and param.help == option_help(param.name, brief=True):  # a setting's, in brief
            param.help = option_help(param.name)
    ctx.command.epilog = (ctx.command.epilog or "").replace(SHORT_HELP_NOTE, "").strip() or None
    typer.echo(ctx.get_help(), nl=False)
    raise typer.Exit()


#: the ``--help-all`` parameter a command adds to its signature
HelpAll = Annotated[Optional[bool], typer.Option("--help-all", callback=help_all_option, is_eager=True,
                                                 expose_value=False, help="Show every option, then exit.")]


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
