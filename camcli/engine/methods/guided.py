"""Guided Backprop and Guided Grad-CAM: pixel-level gradients through "guided" ReLUs.

Guided Backprop (Springenberg et al. 2015) takes the gradient of the class score with respect
to the input pixels, but lets a ReLU pass only positive gradients at positive inputs. Guided
Grad-CAM (Selvaraju et al. 2017) multiplies it by the Grad-CAM map upsampled to the input.

The ReLUs are guided for the call only, without touching the model: a
``TorchFunctionMode`` catches every ``F.relu``/``torch.relu``/``Tensor.relu`` call (so ReLU
modules, ``inplace=True`` ones and ``F.relu`` in forward code alike) and routes it through
:class:`GuidedReLU`, which computes the same values. pytorch-grad-cam swaps the model's ReLU
modules and puts back new ones (losing ``inplace``), misses functional ReLUs, and takes one
image at a time; here the whole batch goes through one forward and one backward.

Other activations (GELU, SiLU, Hardswish, ReLU6, LeakyReLU, ...) cannot be guided: their
gradients pass unchanged. The methods refuse a model with no ReLU at all, and name the
activations they left unguided in the run's log.

The gradient image has three colour channels; the map is the largest absolute value over them
at each pixel (Simonyan et al.'s saliency reduction), at the model input's resolution.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from camcli.errors import UsageError
from camcli.engine.capture import frozen_parameters
from camcli.engine.methods import register
from camcli.engine.methods.base import CAMMethod, ForwardPass
from camcli.engine.methods.gradcam import GradCAM
from camcli.engine.tensors import upsample

_RELU = {F.relu: False, torch.relu: False, torch.Tensor.relu: False,
         F.relu_: True, torch.relu_: True, torch.Tensor.relu_: True}
_UNGUIDED = {F.gelu: "GELU", F.silu: "SiLU", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid", F.relu6: "ReLU6", F.hardtanh: "Hardtanh",
             F.leaky_relu: "LeakyReLU", F.elu: "ELU", F.selu: "SELU", F.celu: "CELU", F.mish: "Mish",
             F.softplus: "Softplus", F.prelu: "PReLU"}


#: Guided Backprop's name, and the per-batch cache key of the guided gradients
GUIDED = "guidedbackprop"


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes a gradient only where both it and the input are positive."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(min=0)
        else:
            out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0), None


class Guided(TorchFunctionMode):
    """Within ``with Guided() as g:``, every ReLU call is guided; ``g.relus`` counts them and
    ``g.unguided`` names the other activations that ran."""

    def __init__(self) -> None:
        super().__init__()
        self.relus = 0
        self.unguided: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            inplace = _RELU[func] or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            self.relus += 1
            return GuidedReLU.apply(args[0], inplace)
        if func in _UNGUIDED:
            self.unguided.add(_UNGUIDED[func])
        return func(*args, **kwargs)


def guided_gradients(fp: ForwardPass) -> tuple[torch.Tensor, Guided]:
    """(N, 3, H, W) guided gradients of each image's explained score w.r.t. its pixels, in one
    batched pass (cached per batch: Guided Grad-CAM at several layers shares it)."""
    key = GUIDED  # where the explainer puts it when Guided Backprop guided the shared forward (watch)
    if fp.cache.get(key) is None:
        model = fp.model
        with frozen_parameters(model), torch.inference_mode(False), torch.enable_grad():
            x = fp.inputs.detach().clone().requires_grad_(True)
            with Guided() as mode:
                output = model(x)
            score = fp.target(output, fp.targets.clone())
            (grad,) = torch.autograd.grad(score.sum(), x)
        fp.cache[key] = (grad.detach(), mode)
    return fp.cache[key]


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W): the largest absolute value over the colour channels."""
    return grad.abs().amax(1)


class _GuidedMethod(CAMMethod):
    pixel_level = True
    cost = "1 forward + 1 backward to the pixels"
    transformers = "only through ReLUs: GELU and other activations pass gradients unguided"

    def validate(self, fp: ForwardPass, layer: str) -> None:
        _, mode = guided_gradients(fp)
        if mode.relus == 0:
            found = f" (it uses {', '.join(sorted(mode.unguided))})" if mode.unguided else ""
            raise UsageError(f"{self.name} guides ReLUs, and this model runs none{found}; use gradcam (or legrad on a ViT)")
        self.notes = ([f"{self.name} guides the model's ReLUs only; {', '.join(sorted(mode.unguided))} pass "
                       "gradients unguided"] if mode.unguided else [])


@register
class GuidedBackprop(_GuidedMethod):
    name = GUIDED
    summary = "pixel-level: input gradient through ReLUs that pass only positive gradients; ignores the layer"
    paper = "Springenberg et al., ICLR-W 2015, arXiv:1412.6806"
    class_discriminative = False
    uses_layer = False
    relu = False  # an absolute value already
    watches_alone = True  # alone, it guides the shared forward instead of running another

    @contextmanager
    def watch(self, model, layers):
        with Guided() as mode:
            yield _Recorder(mode)

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        return saliency(guided_gradients(fp)[0])


class _Recorder:
    def __init__(self, mode: Guided) -> None:
        self.mode = mode

    def finish(self, x, table, targets, target):
        (grad,) = torch.autograd.grad(target.scores(table, targets).sum(), x, retain_graph=True)
        return grad.detach(), self.mode


@register
class GuidedGradCAM(_GuidedMethod):
    name = "guidedgradcam"
    summary = "pixel-level: Guided Backprop times the Grad-CAM map upsampled to the input"
    paper = "Selvaraju et al., ICCV 2017, arXiv:1610.02391"
    cost = "1 forward + 1 partial backward + 1 backward to the pixels"

    def raw_maps(self, fp: ForwardPass, layer: str) -> torch.Tensor:
        cam = GradCAM()(fp, layer).maps  # normalised, ReLU'd Grad-CAM at the layer
        size = tuple(fp.inputs.shape[-2:])
        return saliency(guided_gradients(fp)[0]) * upsample(cam, size)
