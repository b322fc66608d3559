"""Your own model through a factory: ``--model path/to/file.py:function`` or ``--model package.module:function``.

The convention of uvicorn and gunicorn: the part before the last ``:`` names Python code (a
file, or a module importable from the current folder or the environment), the part after it a
callable there (``build``, ``Net``, ``models.make_net``). Called with no arguments, or with the
keyword arguments of repeated ``--model-arg key=value`` (values read as Python literals where they
parse: ``10``, ``0.5``, ``True``, ``'a b'``; as text otherwise), it returns an ``nn.Module``.
Importing the user's own code is what they asked for, so it needs no trust flag; weights still
come only from a state dict or safetensors (``--checkpoint``, ``weights_only``). Every failure is
one line naming the code and the reason.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from camcli.errors import UsageError, first_line
from camcli.models.checkpoints import file_sha256
from camcli.models.model_args import parse_model_args
from camcli.engine.loaded import LoadedModel
from camcli.models.modules import OWN_MODEL_FIT_HINT, own_model
from camcli.models.sources import ModelRequest, ModelSource
from camcli.models.torchvision_weights import no_torchvision_weights
from camcli.settings.code import PYTHON_OBJECT, current_folder_importable, is_factory

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Factory:
    """What a factory spec resolved to, as ``run.json`` records it and ``--resume`` compares it."""

    spec: str  # as given, with a file's path made absolute
    file: str | None  # the source file imported (absolute), when known
    file_sha256: str | None


def build_from_factory(spec: str, model_args: list[str] | None = None) -> tuple[nn.Module, Factory]:
    """Import the code ``spec`` names, call the callable with ``model_args`` and return the module it made."""
    if spec.startswith(PYTHON_OBJECT):
        raise UsageError(f"this run's model was a Python object handed to camcli.explain() ({spec[len(PYTHON_OBJECT):]}): "
                         "there is nothing to import; pass the same module as `model` from Python")
    code, _, attribute = spec.rpartition(":")
    module, file = _import(code, spec)
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise UsageError(f"`model` {spec}: {code} has no {attribute!r}"
                             + (f"; it defines {', '.join(found[:8])}" if found else ""))
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"`model` {spec}: {attribute} is a {type(target).__name__}, not a function or class")
    kwargs = parse_model_args(model_args)
    try:
        made = target(**kwargs)
    except Exception as e:  # the user's code: any failure is theirs to read, in one line
        raise UsageError(f"`model` {spec} failed when called{_with(kwargs)}: {type(e).__name__}: "
                         f"{first_line(e)}") from None
    if not isinstance(made, nn.Module):
        raise UsageError(f"`model` {spec} returned a {type(made).__name__}, not a torch.nn.Module")
    if file and Path(code).is_file():
        spec = f"{file}:{attribute}"  # absolute, so that run.json reruns it from anywhere
    return made, Factory(spec, file, file_sha256(file) if file else None)


def _import(code: str, spec: str):
    """The module for ``code``: a ``.py`` file (its folder joins ``sys.path`` for its own imports) or a dotted name."""
    path = Path(code)
    if code.endswith(".py") or os.sep in code or "/" in code:
        if not path.is_file():
            raise UsageError(f"`model` {spec}: file {code} does not exist")
        name = _module_name(path)
        if name in sys.modules:
            return sys.modules[name], str(path.resolve())
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        where = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(where)
        sys.modules[name] = module
        try:
            where.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise UsageError(f"`model` {spec}: cannot import {code}: {type(e).__name__}: {first_line(e)}") from None
        return module, str(path.resolve())
    if not _MODULE.fullmatch(code):
        raise UsageError(f"`model` {spec}: {code!r} is neither a .py file nor a dotted module name")
    current_folder_importable()
    try:
        module = importlib.import_module(code)
    except Exception as e:
        raise UsageError(f"`model` {spec}: cannot import module {code}: {type(e).__name__}: {first_line(e)}") from None
    file = getattr(module, "__file__", None)
    return module, os.path.abspath(file) if file else None


def _module_name(path: Path) -> str:
    """The file's stem (``mynet.py`` -> ``mynet``), so that its classes are ``mynet.Net`` and its
    models pickle as they would from a script; a unique name when the stem is other code's."""
    stem, mine = re.sub(r"\W", "_", path.stem), str(path.resolve())
    taken = sys.modules.get(stem)
    if taken is not None:
        origin = getattr(taken, "__file__", None)
    else:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        origin = mine if found is None else found.origin
    if stem.isidentifier() and origin and os.path.abspath(origin) == mine:
        return stem
    return "camcli_user_" + hashlib.sha256(mine.encode()).hexdigest()[:12] + "_" + stem


def _with(kwargs: dict) -> str:
    return f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else ""


class FactorySource(ModelSource):
    """``file.py:function`` or ``package.module:function``: the user's code builds the model."""

    name = "factory"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and is_factory(request.spec)

    def load(self, request: ModelRequest) -> LoadedModel:
        no_torchvision_weights(request.weights)
        model, factory = build_from_factory(request.spec, request.model_args)
        return own_model(model, {"kind": "factory", "spec": factory.spec, "file": factory.file,
                                 "file_sha256": factory.file_sha256},
                         size=request.input_size, checkpoint=request.checkpoint, hint=OWN_MODEL_FIT_HINT,
                         **request.own)


FACTORY = FactorySource()
