"""Which settings name code, and what code a run would import, without importing it.

A config file and ``CAMCLI_*`` variables are the user's own, like a Makefile: their ``model`` may
name any importable callable (``package.module:function``, ``file.py:function``), and camcli
imports and calls it. A run folder's ``run.json`` is data: ``camcli evaluate`` runs the code it
names only with ``trust_checkpoint`` (:func:`camcli.evaluation.sources.data_only`). ``--dry-run``
shows what :func:`code_to_run` says. No torch here: the command line asks before torch loads.
"""

from __future__ import annotations

import os
import re
import sys

#: how ``model=<nn.Module>`` is recorded in the settings and run.json (there is nothing to import)
PYTHON_OBJECT = "python-object:"

_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_factory(spec: str | None) -> bool:
    """Whether ``spec`` names a factory (``file.py:fn``, ``pkg.mod:fn``) rather than an architecture."""
    if not spec:
        return False
    if spec.startswith(PYTHON_OBJECT):
        return True
    code, sep, attribute = spec.rpartition(":")
    return bool(sep and code and _ATTRIBUTE.fullmatch(attribute))


def code_to_run(settings) -> list[str]:
    """What a run with ``settings`` would import or execute beyond camcli and its libraries, one line
    each (empty: nothing)."""
    found = []
    model = settings.model
    if is_factory(model) and not model.startswith(PYTHON_OBJECT):
        code, _, attribute = model.rpartition(":")
        args = ", ".join(settings.model_arg or [])
        what = f"the file {code}" if code.endswith(".py") else f"the module {code}"
        found.append(f"imports {what} and calls {attribute}({args}) to build the model "
                     f"(model, from {settings.sources.get('model', 'default')})")
    if settings.trust_checkpoint:
        found.append("may unpickle the checkpoint or run a model folder's own code (trust_checkpoint, from "
                     f"{settings.sources.get('trust_checkpoint', 'default')})")
    return found


def current_folder_importable() -> None:
    """Modules of the current folder import, as under ``python -m`` and uvicorn (a console script's
    ``sys.path`` starts with its own folder instead)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
