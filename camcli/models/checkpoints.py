"""Reading user checkpoints safely and fitting them to a torchvision architecture.

State dicts load with ``torch.load(weights_only=True)``, which refuses to run pickled code,
or through safetensors. Training frameworks wrap and prefix state dicts in a few common ways
(``{"state_dict": ...}``, ``module.`` from DataParallel, ``_orig_mod.`` from torch.compile);
those are unwrapped here so that a checkpoint straight from a training script just works.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from camcli.errors import UsageError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_torchscript(path: Path) -> bool:
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_UNTRUSTED = ("unpickling can run arbitrary code, so camcli refuses it unless you pass `trust_checkpoint` "
              "(only for files you trust). Better: save `model.state_dict()` (or use safetensors).")


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A state dict, or, only with ``trust``, a whole pickled model or TorchScript module."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint {p} does not exist")
    if p.suffix.lower() != ".safetensors" and is_torchscript(p):
        if not trust:
            raise UsageError(f"checkpoint {p} is a TorchScript archive: it carries code, and {_UNTRUSTED}")
        # A compiled module takes no forward hooks, which every method needs; its weights, named as
        # in the eager model it was scripted from, load into `model`'s architecture instead.
        try:
            scripted = torch.jit.load(str(p), map_location="cpu")
        except RuntimeError as e:
            raise UsageError(f"cannot read TorchScript checkpoint {p}: {str(e).splitlines()[0]}") from e
        return strip_wrappers(dict(scripted.state_dict()), str(p))
    try:
        return read_state_dict(p)
    except UsageError as e:
        if not trust or "pickled Python objects" not in str(e):
            raise
    obj = _unpickle(p)
    from camcli.models.yolo import from_checkpoint

    model = from_checkpoint(obj)  # an Ultralytics .pt: a dict holding the model
    if isinstance(obj, nn.Module) or model is not None:
        return model if model is not None else obj
    return strip_wrappers(obj, str(p))


def _unpickle(p: Path):
    """``torch.load(weights_only=False)``: the user vouched for this file. A class whose code is not
    importable here is one line with the two ways out."""
    from camcli.settings.code import current_folder_importable

    current_folder_importable()  # a model class defined next to where the user runs camcli
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as e:
        missing = getattr(e, "name", None) or str(e).splitlines()[0]
        raise UsageError(
            f"checkpoint {p} is a pickled model whose code cannot be imported here ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}): make {missing!s} importable (install its package, or run from the folder "
            "that holds it), or save a state dict and name the code that builds the model: "
            "`model` path/to/file.py:function with that state dict as `checkpoint`") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as e:
        raise UsageError(f"cannot read checkpoint {p}: {str(e).splitlines()[0]}") from None


_ZIP_MAGIC = b"PK\x03\x04"


def _looks_like_torch_save(p: Path) -> bool:
    """torch.save writes a zip archive (since PyTorch 1.6) or, in the legacy format, a pickle."""
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError:
        return True  # let torch.load report it
    return head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pt`` or ``.pth`` checkpoint, unwrapped and unprefixed."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint {p} does not exist")
    if p.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            data = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise UsageError(f"checkpoint {p} is not a readable safetensors file: {e}") from e
    else:
        if not _looks_like_torch_save(p):
            raise UsageError(f"checkpoint {p} is not a PyTorch checkpoint: neither a file torch.save wrote (a zip "
                             "archive or a pickle) nor .safetensors")
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UsageError(
                f"checkpoint {p} is not a plain state dict: it contains pickled Python objects "
                f"(a whole model?), and {_UNTRUSTED}") from e
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise UsageError(f"cannot read checkpoint {p}: {str(e).splitlines()[0]}") from e
    return strip_wrappers(data, str(p))


def strip_wrappers(data, source: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(data, dict) and not _is_tensor_dict(data):
            inner = next((data[k] for k in _WRAPPER_KEYS if k in data and isinstance(data[k], dict)), None)
            if inner is None:
                break
            data = inner
    if not isinstance(data, dict) or not data or not _is_tensor_dict(data):
        raise UsageError(f"checkpoint {source} holds no state dict of tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in data):
            data = {k[len(prefix):]: v for k, v in data.items()}
    return data


def _is_tensor_dict(d: dict) -> bool:
    return all(isinstance(k, str) for k in d) and all(isinstance(v, torch.Tensor) for v in d.values())


def head_key(model: nn.Module) -> str | None:
    """Name of the final classifier's weight (``fc.weight``, ``classifier.6.weight``, ...)."""
    key = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and getattr(module, "weight", None) is not None:
            key = f"{name}.weight"
    return key


def named_state(checkpoint, weights, trust: bool) -> dict:
    """The state dict of a checkpoint for a torchvision architecture named by ``model``: refused
    beside torchvision ``weights`` (one of the two supplies them), and when the file is a whole
    pickled model (then the file is the model)."""
    from camcli.models.torchvision_weights import no_weights

    if not no_weights(weights):
        raise UsageError("`weights` and `checkpoint` exclude each other: the checkpoint supplies the weights")
    state = read_checkpoint(checkpoint, trust=trust)
    if isinstance(state, nn.Module):
        raise UsageError(f"checkpoint {checkpoint} is a whole pickled model: the file is the model, so leave "
                         "`model` out")
    return state


#: what to do when a state dict does not fit a named architecture
OWN_MODEL_HINT = ("Check `model` and `num_classes`; for a model of your own class, name the code that builds it: "
                  "`model` path/to/file.py:function (see docs/models.md, \"Your own model\")")


#: why a TorchScript file's weights go into `model`, and what else to do
TORCHSCRIPT_HINT = ("A TorchScript program takes no forward hooks, so camcli cannot read a layer inside it; it loads "
                    "the program's weights into `model` instead: name the architecture it was scripted from, or "
                    "export it with torch.export (a .pt2 is explained at its own layers), or save a state dict")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, hint: str = OWN_MODEL_HINT) -> None:
    """``load_state_dict(strict=True)`` with an error that names the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    # a complex or integer tensor cast into a float weight silently would be another model
    kinds = [(k, state[k].dtype, own[k].dtype) for k in own if k in state and isinstance(state[k], torch.Tensor)
             and (state[k].is_complex() or (own[k].is_floating_point() and not state[k].is_floating_point()))]
    if kinds and not (missing or unexpected or shapes):
        raise UsageError(f"checkpoint {source} holds tensors of another kind than the model's weights: "
                         + "; ".join(f"{k}: {a} in the file, {b} in the model" for k, a, b in kinds[:3])
                         + ". camcli does not cast them (a quantised or complex checkpoint is another model); save "
                         "the float weights")
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:3]))
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. " + ", ".join(missing[:3]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. " + ", ".join(unexpected[:3]))
        raise UsageError(f"checkpoint {source} does not fit the architecture: " + "; ".join(parts)
                         + (f". {hint}." if hint else "."))
    model.load_state_dict(state, strict=True)
