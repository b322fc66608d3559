"""Naming layers: what users write (``layer4[1]``) and the module it points at.

Users write layers the way they index the model in Python (``layer4[1]``, ``layer4[-1]``,
``features[28]``) or the way ``named_modules`` spells them (``layer4.1``, ``features.28``).
Both resolve to the same canonical dotted name; we display the bracket form.

A module that runs more than once per forward (one activation module applied in the stem and
in the head) is a layer per call: ``act#2`` is its second call's output (:func:`split_call`).
"""

from __future__ import annotations

import re

from torch import nn

from camcli.errors import UsageError, closest

_TOKEN = re.compile(r"\s*(?:\.?\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(-?\d+)\s*\]|\.?\s*(-?\d+))")


def parse_layer(spec: str) -> list[str | int]:
    """Split ``'layer4[1]'``, ``'layer4.1'`` or ``'features[-1].conv'`` into attribute/index parts."""
    text = spec.strip()
    if not text:
        raise UsageError("empty `layer` name")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"cannot parse layer name {spec!r} at {text[pos:]!r}; write it like layer4[1] or layer4.1")
        name, bracket, bare = m.groups()
        parts.append(name if name is not None else int(bracket if bracket is not None else bare))
        pos = m.end()
    return parts


_CALL = re.compile(r"\s*#\s*(\d+)\s*$")


def split_call(layer: str) -> tuple[str, int | None]:
    """``'act#2'`` -> ``('act', 2)``; ``'layer4.1'`` -> ``('layer4.1', None)``: the module, and which
    of its calls in a forward (1 for the first) the layer means."""
    m = _CALL.search(layer)
    return (layer[:m.start()], int(m.group(1))) if m else (layer, None)


def display_name(dotted: str) -> str:
    """``'layer4.1'`` -> ``'layer4[1]'``; ``'features.norm5'`` stays as it is; a fused set
    ``'layer3+layer4.1'`` -> ``'layer3+layer4[1]'``."""
    if "+" in dotted:
        return "+".join(display_name(part) for part in dotted.split("+"))
    dotted, call = split_call(dotted)
    if call is not None:
        return f"{display_name(dotted)}#{call}"
    out = ""
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def file_safe(dotted: str) -> str:
    """Layer name usable in a file name on every platform (``layer4.1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dotted) or "model"


def resolve_layer(model: nn.Module, spec: str) -> str:
    """Canonical dotted name of the module ``spec`` points at (with ``#k`` for its k-th call), or a
    ``UsageError`` with suggestions."""
    spec, call = split_call(spec)
    if call is not None:
        if call < 1:
            raise UsageError(f"layer {spec}#{call}: calls are counted from 1 (#1 is the first)")
        return f"{resolve_layer(model, spec)}#{call}"
    modules = dict(model.named_modules())
    if spec.strip() in modules and spec.strip():
        return spec.strip()
    path: list[str] = []
    module = model
    for part in parse_layer(spec):
        children = list(module.named_children())
        if isinstance(part, int):
            if not children:
                break
            index = part + len(children) if part < 0 else part
            if not 0 <= index < len(children):
                raise _unknown_layer(model, spec, f"index {part} is out of range ({len(children)} children)")
            name, module = children[index]
        else:
            sub = dict(children)
            if part not in sub:
                raise _unknown_layer(model, spec)
            name, module = part, sub[part]
        path.append(name)
    else:
        return ".".join(path)
    raise _unknown_layer(model, spec)


def _unknown_layer(model: nn.Module, spec: str, why: str = "") -> UsageError:
    names = [n for n, _ in model.named_modules() if n]
    shown = [display_name(n) for n in names]
    near = closest(spec.strip(), shown + names, n=5)
    near = list(dict.fromkeys(display_name(n) if n in names else n for n in near))
    msg = f"unknown layer {spec!r}" + (f" ({why})" if why else "")
    if near:
        msg += "; closest: " + ", ".join(near)
    msg += ". See every name with `camcli layers MODEL`."
    return UsageError(msg)


def hook_layer(model: nn.Module, layer: str, hook) -> list:
    """Register ``hook`` as a forward hook of ``layer``'s module; for ``name#k``, only on its k-th
    call in each forward of ``model`` (a pre-hook on the model restarts the count). The handles."""
    name, call = split_call(layer)
    module = model.get_submodule(name)
    if call is None:
        return [module.register_forward_hook(hook)]
    seen = [0]

    def restart(_model, _inputs):
        seen[0] = 0

    def on_call(m, inputs, output):
        seen[0] += 1
        return hook(m, inputs, output) if seen[0] == call else None

    return [model.register_forward_pre_hook(restart), module.register_forward_hook(on_call)]
