"""Naming layers: what users write (``layer4[1]``) and the module it points at.

Users write layers the way they index the model in Python (``layer4[1]``, ``layer4[-1]``,
``features[28]``) or the way ``named_modules`` spells them (``layer4.1``, ``features.28``).
Both resolve to the same canonical dotted name; we display the bracket form.
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


def display_name(dotted: str) -> str:
    """``'layer4.1'`` -> ``'layer4[1]'``; ``'features.norm5'`` stays as it is; a fused set
    ``'layer3+layer4.1'`` -> ``'layer3+layer4[1]'``."""
    if "+" in dotted:
        return "+".join(display_name(part) for part in dotted.split("+"))
    out = ""
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def file_safe(dotted: str) -> str:
    """Layer name usable in a file name on every platform (``layer4.1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dotted) or "model"


def resolve_layer(model: nn.Module, spec: str) -> str:
    """Canonical dotted name of the module ``spec`` points at, or a ``UsageError`` with suggestions."""
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
