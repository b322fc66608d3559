"""MONAI's networks by name: ``--model monai/DenseNet121`` with their constructor's arguments as
``--model-arg`` (``spatial_dims=3``, ``in_channels=1``, ``out_channels=2``), when the optional
``monai`` package is installed (``pip install 'camcli[monai]'``).

The network is built with random weights and loaded from ``--checkpoint`` (a state dict, read as
data); nothing is downloaded. With ``spatial_dims=3`` its first convolution is 3D and the run is a
volume run (camcli/tasks/volume.py); with ``spatial_dims=2`` it is an image classifier. The name
is looked up among ``monai.networks.nets``'s classes only: a name is never imported from elsewhere.
"""

from __future__ import annotations

import inspect

from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, first_line, unknown
from camcli.models.model_args import parse_model_args
from camcli.models.modules import own_model
from camcli.models.sources import ModelRequest, ModelSource

PREFIX = "monai/"


def networks() -> dict[str, type]:
    """MONAI's network classes by name (empty when MONAI is not installed)."""
    try:
        from monai.networks import nets
    except ImportError:
        return {}
    return {n: c for n, c in vars(nets).items() if isinstance(c, type) and issubclass(c, nn.Module)}


def build(spec: str, model_args: list[str] | None) -> nn.Module:
    found = networks()
    if not found:
        raise UsageError("MONAI's networks need the optional monai package: pip install 'camcli[monai]'")
    name = spec[len(PREFIX):]
    if name not in found:
        raise unknown("MONAI network", name, sorted(found), listed=12)
    kwargs = parse_model_args(model_args)
    try:
        return found[name](**kwargs).eval()
    except (TypeError, ValueError, AssertionError) as e:  # MONAI checks its arguments with asserts too
        params = ", ".join(p for p in inspect.signature(found[name]).parameters if p not in ("self", "args", "kwargs"))
        raise UsageError(f"--model {spec} with {kwargs or 'no arguments'}: {first_line(e)}; its arguments (give them "
                         f"with --model-arg key=value): {params}") from None


class MonaiNetworks(ModelSource):
    name = "monai"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and request.spec.startswith(PREFIX)

    def load(self, request: ModelRequest) -> LoadedModel:
        model = build(request.spec, request.model_args)
        return own_model(model, {"kind": "monai", "spec": request.spec, "args": parse_model_args(request.model_args)},
                         size=request.input_size, checkpoint=request.checkpoint,
                         hint=f"Check that --model-arg builds the {request.spec} the checkpoint was saved from",
                         **request.own)


MONAI = MonaiNetworks()
