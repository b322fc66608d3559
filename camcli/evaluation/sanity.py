"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, arXiv:1810.03292).

Does a map depend on what the model learnt? The model-parameter randomisation test
re-initialises the weights and explains the same images again, for the same classes: a map
that barely changes explains the architecture or the image (edges), not the model.

- **Cascading**: the model's parameter units are re-initialised from the top (classifier) down,
  one more unit per step, and the maps at each step are compared with the trained model's.
- **Independent**: one unit at a time is re-initialised, the others kept as trained.

Units follow the architecture: a module inside a sequence of like modules is one unit (ResNet
and ConvNeXt blocks, ViT and Swin encoder blocks, MobileNet's inverted residuals), a sequence of
plain layers is split at its pooling layers (VGG's conv groups) and modules elsewhere are
descended into. Units run bottom to top in the order of one forward pass; parameters of modules
that pass never calls are not randomised (they cannot change a map).

Re-initialisation uses each module's own ``reset_parameters`` (PyTorch's default init; a
BatchNorm returns to identity statistics), other parameters (class tokens, position
embeddings, layer scales) are redrawn from a normal distribution with the trained tensor's
standard deviation. Everything is seeded from ``seed``; the model is restored afterwards.

Similarity, per image, between the trained model's map and the randomised one, both at the
model's input size: Spearman rank correlation (ties share their mean rank; a map that turned
constant, e.g. empty, counts as 0) and SSIM (Gaussian window of 11 px, sigma 1.5, maps in
[0, 1]). The explained class is the one the trained model explained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from camcli.engine.capture import removed_after
from camcli.engine.stream import uses_channels_last
from camcli.engine.tensors import upsample
from camcli.engine.layer_names import display_name
from camcli.engine.work import WorkMeter, counting

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class Unit:
    """A group of parameters re-initialised together, named for the report."""

    name: str
    modules: tuple[nn.Module, ...]  # re-initialised with their parameters (recursively)
    own: tuple[nn.Parameter, ...] = ()  # parameters held directly by a module that is not a unit


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_sequence(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _units(module: nn.Module, prefix: str) -> Iterator[Unit]:
    own = dict(module.named_parameters(recurse=False))
    children = [(_join(prefix, n), c) for n, c in module.named_children()]
    if not _is_sequence(module):
        if own:  # a ViT's class token, position embeddings
            yield Unit(", ".join(display_name(_join(prefix, n)) for n in own), (), tuple(own.values()))
        for name, child in children:
            if not _has_params(child):
                continue
            if next(child.children(), None) is None:
                yield Unit(display_name(name), (child,))
            else:
                yield from _units(child, name)
        return
    if all(next(c.children(), None) is None for _, c in children):  # plain layers: split at pooling
        group: list[tuple[str, nn.Module]] = []
        for name, child in children + [("", nn.MaxPool2d(1))]:
            if isinstance(child, _POOLS) and group:
                first, last = display_name(group[0][0]), display_name(group[-1][0])
                yield Unit(first if first == last else f"{first}..{last}", tuple(c for _, c in group))
                group = []
            elif _has_params(child):
                group.append((name, child))
        return
    for name, child in children:
        if not _has_params(child):
            continue
        if _is_sequence(child):
            yield from _units(child, name)
        else:
            yield Unit(display_name(name), (child,))


def parameter_units(model: nn.Module, example: torch.Tensor) -> list[Unit]:
    """The model's units, bottom to top in the order one forward pass of ``example`` uses them."""
    first_call: dict[int, int] = {}

    def seen(module, args) -> None:
        first_call.setdefault(id(module), len(first_call))

    with removed_after([m.register_forward_pre_hook(seen) for m in model.modules()]), torch.no_grad():
        model(example)
    units = []
    for unit in _units(model, ""):
        modules = unit.modules or ()
        calls = [first_call[id(m)] for top in modules for m in top.modules() if id(m) in first_call]
        if unit.own:
            owner = next((m for m in model.modules() if any(p is q for p in unit.own for q in m.parameters(recurse=False))), None)
            calls += [first_call[id(owner)]] if owner is not None and id(owner) in first_call else []
        if calls:
            units.append((min(calls), unit))
    return [u for _, u in sorted(units, key=lambda t: t[0])]


def reinitialise(unit: Unit, seed: int) -> None:
    """Redraw the unit's parameters (and reset its buffers) from ``seed``."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        covered: set[int] = set()
        for top in unit.modules:
            for m in top.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                    covered.update(id(p) for p in m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    m.reset_running_stats()
        loose = list(unit.own) + [p for top in unit.modules for p in top.parameters() if id(p) not in covered]
        for p in loose:
            std = float(p.float().std()) if p.numel() > 1 else 0.0
            p.copy_(torch.randn(p.shape).mul_(std if std > 0 else 0.02).to(p))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of each row of (N, P), ties sharing their mean rank."""
    out = torch.empty_like(x, dtype=torch.float64)
    for i, row in enumerate(x):
        values, order = torch.sort(row)
        _, counts = torch.unique_consecutive(values, return_counts=True)
        ends = torch.cumsum(counts, 0)
        mean_rank = (ends - (counts - 1) / 2.0).double()
        out[i, order] = torch.repeat_interleave(mean_rank, counts)
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps in (N, H, W); 0 where either is constant."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each pair of maps in (N, H, W), values in [0, 1]."""
    k = torch.arange(11, dtype=torch.float32, device=a.device) - 5
    g = torch.exp(-k ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None]

    def blur(t):
        return F.conv2d(t, window)

    x, y = a[:, None].float(), b[:, None].float()
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3))


@dataclass
class Step:
    """One randomisation step: per-image similarities for every (method, layer)."""

    randomised: str  # the unit re-initialised at this step (cascading: this one and all above)
    spearman: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ssim: dict[tuple[str, str], list[float]] = field(default_factory=dict)


@dataclass
class SanityResult:
    units: list[str]  # bottom to top
    paths: list[str]  # the images, in the order of the per-image lists
    cascade: list[Step]  # top unit first
    independent: list[Step]


def run_sanity(explainer, model: nn.Module, pixels: Sequence[torch.Tensor], targets: Sequence[int],
               seeds: Sequence[int], paths: Sequence[str], mean: Sequence[float], std: Sequence[float],
               device: torch.device, seed: int = 0, batch_size: int = 16,
               progress: Callable[[int, int], None] | None = None,
               log: Callable[[str], None] | None = None) -> SanityResult:
    """The cascading and independent randomisation tests on the decoded images ``pixels`` ((3, H, W)
    uint8 at model size), explaining each image's class ``targets``; ``seeds`` are the images'
    seeds for methods that draw random numbers. The model is restored before returning."""
    size = tuple(pixels[0].shape[1:])
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    nhwc = uses_channels_last(model)
    batches = [range(k, min(k + batch_size, len(pixels))) for k in range(0, len(pixels), batch_size)]

    def explain() -> dict[tuple[str, str], torch.Tensor]:
        out: dict[tuple[str, str], list[torch.Tensor]] = {}
        for b in batches:
            x = (torch.stack([pixels[i] for i in b]).to(device).float().div_(255) - m) / s
            x = x.contiguous(memory_format=torch.channels_last) if nhwc else x
            t = torch.tensor([targets[i] for i in b], device=device)
            exp = explainer(x, t, seeds=[seeds[i] for i in b])
            for (method, layer), mb in exp.maps.items():  # kept at the layer's size: small for long runs
                out.setdefault((method, display_name(layer)), []).append(mb.maps.float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    units = parameter_units(model, torch.zeros(1, 3, *size, device=device))
    total = 1 + 2 * len(units)
    meter = WorkMeter("sanity", "explanation passes")  # polled by a progress display (work.current)
    done = 0
    if log:
        log(f"sanity checks: {total} explanation passes over {len(pixels)} image(s) (the trained model, then "
            f"{len(units)} blocks re-initialised in a cascade and one at a time), each as costly as explaining them "
            "once; fewer images or cheaper `method` choices cut them")

    meter.start(total)

    def tick():
        nonlocal done
        done += 1
        meter.image_done()
        if progress:
            progress(done, total)

    def compare(label: str, original, now) -> Step:
        """Both maps at the model's input size, a batch at a time."""
        step = Step(label)
        for key, maps in original.items():
            rho, ss = step.spearman.setdefault(key, []), step.ssim.setdefault(key, [])
            for b in batches:
                a, c = upsample(maps[b.start:b.stop], size), upsample(now[key][b.start:b.stop], size)
                rho += spearman(a, c).tolist()
                ss += ssim(a, c).tolist()
        return step

    trained = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()}
    with counting(meter):
        return _randomised(explain, compare, tick, model, units, trained, seed, paths)


def _randomised(explain, compare, tick, model, units, trained, seed, paths) -> SanityResult:
    """The trained model's maps, then the cascade and the independent re-initialisations."""
    try:
        original = explain()
        tick()
        cascade = []
        for k, unit in enumerate(reversed(units)):
            reinitialise(unit, seed * 1000 + k)
            cascade.append(compare(unit.name, original, explain()))
            tick()
        model.load_state_dict(trained)
        independent = []
        for k, unit in enumerate(reversed(units)):
            reinitialise(unit, seed * 1000 + k)
            independent.append(compare(unit.name, original, explain()))
            model.load_state_dict(trained)
            tick()
    finally:
        model.load_state_dict(trained)
    return SanityResult([u.name for u in units], list(paths), cascade, independent)
