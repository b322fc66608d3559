"""``torch.export`` programs (``.pt2``, what PyTorch now recommends over TorchScript), explained at a named layer.

What was measured (tests/test_own_models.py): ``torch.export.unflatten`` rebuilds the module
hierarchy of an exported program, forward hooks on its submodules see their outputs and
gradients flow back to them, so every method works at a layer named as in the eager model
(``layer4``, ``layer4.1``). But the program keeps the input shapes it was exported with: the
height and width always (the input size is taken from the program), and the batch size unless it
was exported as dynamic. camcli runs images in batches and Score-CAM's masks in larger ones, so a
program with a fixed batch is refused, saying how to re-export it. ``torch.export.load`` may
unpickle constants with ``weights_only=False``, so a ``.pt2`` loads only with ``--trust-checkpoint``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, first_line
from camcli.models.modules import own_model
from camcli.models.sources import ModelRequest, ModelSource


def is_exported(path) -> bool:
    """Whether ``path`` is an archive ``torch.export.save`` wrote."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return any("serialized_exported_program" in n or n.endswith("models/model.json") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_program(path, size: tuple[int, int] | None = None, num_classes: int | None = None, labels=None,
                 trust: bool = False, output: str | None = None) -> LoadedModel:
    """The exported program ready for the engine; ``size``, if given, must be the one it was exported at."""
    program, exported_size = load(path, trust)
    if size is not None and size != exported_size:
        raise UsageError(f"`input_size` {size[0]}: the exported program takes {exported_size[0]}x{exported_size[1]} "
                         "images only")
    return own_model(program, {"kind": "exported"}, size=exported_size, file=path, num_classes=num_classes,
                     labels=labels, output=output)


def load(path, trust: bool) -> tuple[nn.Module, tuple[int, int]]:
    """The unflattened program and the (height, width) it takes."""
    if not trust:
        raise UsageError(f"checkpoint {path} is a torch.export program: torch.export.load may unpickle its constants, "
                         "which can run code, so camcli loads it only with `trust_checkpoint` (for files you trust)")
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # a damaged or foreign archive: its reason, in one line
        raise UsageError(f"cannot read exported program {path}: {first_line(e)}") from None
    images = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    shapes = [tuple(n.meta["val"].shape) for n in images if n.meta.get("val") is not None]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise UsageError(f"exported program {path} takes {len(shapes)} input(s) of shape(s) {shapes}; camcli feeds one "
                         "(N, 3, H, W) image batch")
    batch, channels, height, width = shapes[0]
    if isinstance(batch, int):
        raise UsageError(f"exported program {path} was exported with a fixed batch of {batch}; camcli runs images (and "
                         "Score-CAM's masks) in batches: export it with dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), "
                         "or save a state dict and name the code that builds the model (`model` file.py:function)")
    if not all(isinstance(v, int) for v in (channels, height, width)) or channels != 3:
        raise UsageError(f"exported program {path} takes images of shape {tuple(shapes[0])}; camcli feeds 3 channels at "
                         "a fixed height and width")
    return torch.export.unflatten(program), (int(height), int(width))


class Program(ModelSource):
    """A ``torch.export`` program as the checkpoint: the file is the model."""

    name = "exported"

    def claims(self, request: ModelRequest) -> bool:
        return request.checkpoint is not None and is_exported(request.checkpoint)

    def load(self, request: ModelRequest) -> LoadedModel:
        from camcli.models.classifiers import DEFAULT_ARCHITECTURE

        if request.spec not in (None, DEFAULT_ARCHITECTURE):
            raise UsageError(f"checkpoint {request.checkpoint} is a torch.export program, which is the model: leave "
                             "`model` out")
        return load_program(request.checkpoint, request.input_size, trust=request.trust, **request.own)


PROGRAM = Program()
