"""HuggingFace image classifiers and semantic segmenters from a local folder: ``--model path/to/folder`` (optional ``transformers``).

The folder is what ``save_pretrained`` writes and what fine-tuning tutorials end with: a
``config.json``, weights (``model.safetensors``, or ``pytorch_model.bin``) and usually the image
processor's ``preprocessor_config.json``. It loads offline (``local_files_only``) with
``AutoModelForImageClassification`` (``AutoModelForSemanticSegmentation`` when the config's
``architectures`` name a ``*ForSemanticSegmentation``: SegFormer, UperNet, DPT). A folder is data, not code: a config whose ``auto_map``
asks for the folder's own Python code is refused unless ``--trust-checkpoint`` is given
(``trust_remote_code``), safetensors are preferred, and a ``.bin`` is read with
``weights_only`` (transformers' own safe loading). Labels come from ``id2label``; the input size,
crop fraction (``crop_pct``, for ``--resize crop``), mean and std from the image processor's
config; the score from the output object's ``.logits``. Layer names are module paths
(``vit.encoder.layer[-1].layernorm_before``); ViT-style token layers read as maps through the
config's ``patch_size``, Swin's token sequences and ConvNeXt's and ResNet's feature maps as they are.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

from torch import nn

from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError, first_line
from camcli.models.checkpoints import file_sha256
from camcli.models.modules import own_model
from camcli.models.sources import ModelRequest, ModelSource

#: what transformers' image processors default to when the config does not say (ImageNet's)
_DEFAULT_MEAN, _DEFAULT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_hf_folder(spec) -> bool:
    """Whether ``spec`` is a folder holding a ``config.json`` (what ``from_pretrained`` takes)."""
    try:
        return isinstance(spec, (str, Path)) and (Path(spec) / "config.json").is_file()
    except OSError:
        return False


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("a HuggingFace model folder needs the optional transformers package: "
                         "pip install 'camcli[hf]'") from None
    return transformers


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object")
    return data


def load_folder(folder: Path, size: tuple[int, int] | None = None, num_classes: int | None = None, labels=None,
                trust: bool = False, output: str | None = None) -> LoadedModel:
    """The classifier in ``folder`` ready for the engine: labels from ``id2label`` unless ``labels``,
    the input size from the image processor unless ``size``, its mean, std and crop fraction."""
    model, config, pre = load(folder, trust)
    size = size or pre["input_size"] or _square(config.get("image_size"))
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    digest = hashlib.sha256("".join(file_sha256(p) for p in weights).encode()).hexdigest()
    loaded = own_model(model, {"kind": "huggingface", "spec": str(folder.resolve()), "model_type":
                               config.get("model_type"), "weights_sha256": digest},
                       size=size, num_classes=num_classes, output=output,
                       labels=labels if labels is not None else labels_of(config))
    if pre["mean"] is not None:
        loaded.mean, loaded.std = pre["mean"], pre["std"]
    if pre["crop_fraction"]:
        loaded.crop_fraction = pre["crop_fraction"]
    return loaded


def _square(side) -> tuple[int, int] | None:
    return (int(side), int(side)) if isinstance(side, int) else None


def load(folder: str | Path, trust: bool = False) -> tuple[nn.Module, dict, dict]:
    """The classifier in ``folder``, its ``config.json`` and what its image processor says
    (``input_size``, ``crop_fraction``, ``mean``, ``std``; ``None`` where it says nothing)."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    if config.get("auto_map") and not trust:
        raise UsageError(f"{folder}/config.json asks for the folder's own Python code (auto_map: "
                         f"{', '.join(sorted(config['auto_map']))}); running it needs `trust_checkpoint` (only for "
                         "folders you trust)")
    transformers = _transformers()
    weights = {"safetensors": (folder / "model.safetensors").is_file() or
               any(folder.glob("model-*.safetensors")),
               "bin": (folder / "pytorch_model.bin").is_file() or any(folder.glob("pytorch_model-*.bin"))}
    if not any(weights.values()):
        raise UsageError(f"{folder} holds a config.json but no weights (model.safetensors or pytorch_model.bin)")
    # a semantic segmenter (SegFormer) says so in its architectures; everything else loads as a classifier
    semantic = any(str(a).endswith("ForSemanticSegmentation") for a in config.get("architectures") or [])
    logging = transformers.utils.logging
    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    # camcli's log says what is loaded, and its one-line error what went wrong; --quiet means quiet
    logging.disable_progress_bar()
    logging.set_verbosity(logging.CRITICAL)  # transformers' load report and its advice name options camcli lacks
    what = f"the HuggingFace model in {folder} as an image {'segmenter' if semantic else 'classifier'}"
    try:
        auto = (transformers.AutoModelForSemanticSegmentation if semantic else
                transformers.AutoModelForImageClassification)
        model = auto.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust, use_safetensors=weights["safetensors"])
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused it: nothing ran
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise UsageError(f"cannot load {what}: its pytorch_model.bin holds pickled Python objects"
                         + (f" ({found.group(1)})" if found else "") + ", not only tensors; camcli reads a model "
                         "folder's weights as data and never unpickles code: save the model as safetensors "
                         "(save_pretrained's default)") from None
    except (ValueError, OSError, KeyError, RuntimeError, ImportError) as e:
        reason = first_line(e)
        if "mismatched" in reason or "size mismatch" in reason:
            reason = ("its weights' shapes do not fit its config.json (the classifier's size and id2label or "
                      "num_labels, say): fix config.json or save the model again")
        raise UsageError(f"cannot load {what}: {reason}") from None
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    return model.eval(), config, _preprocessing(folder)


def labels_of(config: dict) -> list[str] | None:
    """``id2label`` in index order, or ``None``."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        pairs = sorted((int(k), str(v)) for k, v in id2label.items())
    except (TypeError, ValueError):
        return None
    return [v for _, v in pairs] if [k for k, _ in pairs] == list(range(len(pairs))) else None


def _preprocessing(folder: Path) -> dict:
    """``input_size``, ``crop_fraction``, ``mean`` and ``std`` from ``preprocessor_config.json``."""
    found = {"input_size": None, "crop_fraction": None, "mean": None, "std": None}
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return found
    cfg = read_json(path)
    size = cfg.get("crop_size") if cfg.get("do_center_crop") and cfg.get("crop_size") else cfg.get("size")
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            found["input_size"] = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            found["input_size"] = (int(size["shortest_edge"]),) * 2
    elif isinstance(size, int):
        found["input_size"] = (size, size)
    if cfg.get("crop_pct"):
        found["crop_fraction"] = float(cfg["crop_pct"])
    if cfg.get("do_normalize", True):
        found["mean"] = tuple(float(v) for v in cfg.get("image_mean", _DEFAULT_MEAN))
        found["std"] = tuple(float(v) for v in cfg.get("image_std", _DEFAULT_STD))
    else:
        found["mean"], found["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return found


class Folder(ModelSource):
    """A HuggingFace model folder (``save_pretrained``): config, weights and preprocessing."""

    name = "huggingface"

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, (str, Path)) and is_hf_folder(request.spec)

    def load(self, request: ModelRequest) -> LoadedModel:
        if request.checkpoint is not None:
            raise UsageError("a HuggingFace folder holds its own weights: leave `checkpoint` out")
        return load_folder(Path(request.spec), request.input_size, trust=request.trust, **request.own)


FOLDER = Folder()
