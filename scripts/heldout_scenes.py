"""Held-out scenes for judging the demo model: written apart from the training generator.

Nothing here is shared with ``demo_scenes.py`` or used in training. Scenes are drawn with
Pillow (supersampled 3x, then reduced: another anti-aliasing than OpenCV's), each class is
parametrised its own way (isosceles and right triangles, rounded squares, five-pointed stars
from their own recipe, plus signs and saltires, circles and rings with an outline), and the
backgrounds and distractors come from families the model never saw: radial gradients with a
vignette, plaid, halftone dots, soft colour splats, paper grain; lightning bolts, spirals,
squiggles, barcodes and words in Pillow's font. Damage is Pillow's: box blur, posterise,
pixelation, JPEG. Aspect ratios run up to 4:1, as in real use.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
SS = 3  # supersampling factor


@dataclass(frozen=True)
class HeldoutObject:
    label: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, exclusive
    #: (h, w) bool: the object's own pixels (truth for the demo segmenter)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


def heldout_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(180, 360))
    ratio = float(rng.choice([1.0, 1.0, 1.33, 1.5, 1.78, 2.0, 2.5, 3.0, 4.0]))
    long = int(short * ratio)
    return (long, short) if rng.random() < 0.6 else (short, long)


def _colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _backdrop(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = rng.integers(5)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # radial gradient with a vignette
        d = np.hypot((xx - rng.uniform(0, w)) / w, (yy - rng.uniform(0, h)) / h)
        t = np.clip(d / d.max(), 0, 1)[..., None]
        img = a * (1 - t) + b * t
        img *= 1 - 0.5 * (np.hypot(xx / w - 0.5, yy / h - 0.5) ** 2)[..., None]
    elif kind == 1:  # plaid: crossing translucent bands
        img = np.broadcast_to(a, (h, w, 3)).copy()
        for _ in range(int(rng.integers(3, 8))):
            c, wd = np.array(_colour(rng), np.float32), rng.uniform(6, 30)
            if rng.random() < 0.5:
                band = np.abs(xx - rng.uniform(0, w)) < wd
            else:
                band = np.abs(yy - rng.uniform(0, h)) < wd
            img[band] = img[band] * 0.5 + c * 0.5
    elif kind == 2:  # halftone dots of varying size
        img = np.broadcast_to(a, (h, w, 3)).copy()
        p = rng.uniform(6, 14)
        size = (np.sin(xx / w * rng.uniform(2, 8)) + np.cos(yy / h * rng.uniform(2, 8)) + 2) / 4 * p * 0.45
        dist = np.hypot((xx % p) - p / 2, (yy % p) - p / 2)
        img[dist < size] = b
    elif kind == 3:  # soft colour splats
        img = np.broadcast_to(a, (h, w, 3)).copy()
        for _ in range(int(rng.integers(4, 12))):
            c = np.array(_colour(rng), np.float32)
            s = rng.uniform(0.05, 0.3) * max(w, h)
            g = np.exp(-(((xx - rng.uniform(0, w)) ** 2 + (yy - rng.uniform(0, h)) ** 2) / (2 * s * s)))[..., None]
            img = img * (1 - 0.8 * g) + c * 0.8 * g
    else:  # paper grain
        img = np.broadcast_to(a, (h, w, 3)) + rng.normal(0, rng.uniform(4, 14), (h, w, 1))
        fibre = rng.normal(0, 1, (h, w // 12 + 1))
        img = img + np.repeat(fibre, 12, 1)[:, :w, None] * rng.uniform(2, 8)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _outline(label: str, cx: float, cy: float, r: float, turn: float, rng) -> list[tuple[float, float]]:
    """Polygon outlines for the polygonal classes, each class its own recipe."""
    def turned(pts):
        c, s = math.cos(turn), math.sin(turn)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]

    if label == "square":
        return turned([(-r * 0.75, -r * 0.75), (r * 0.75, -r * 0.75), (r * 0.75, r * 0.75), (-r * 0.75, r * 0.75)])
    if label == "triangle":
        if rng.random() < 0.3:  # right triangle
            return turned([(-r * 0.8, r * 0.7), (r * 0.8, r * 0.7), (-r * 0.8, -r * 0.8)])
        apex = math.radians(rng.uniform(40, 90))
        half = math.tan(apex / 2) * 1.6 * r
        return turned([(0, -r), (half / 1.6 * 0.9, r * 0.6), (-half / 1.6 * 0.9, r * 0.6)])
    if label == "star":
        inner = rng.uniform(0.38, 0.5)
        return turned([(math.sin(i * math.pi / 5) * (r if i % 2 == 0 else r * inner),
                        -math.cos(i * math.pi / 5) * (r if i % 2 == 0 else r * inner)) for i in range(10)])
    if label == "cross":
        k = rng.uniform(0.22, 0.4) * r
        pts = [(-k, -r), (k, -r), (k, -k), (r, -k), (r, k), (k, k), (k, r), (-k, r), (-k, k), (-r, k), (-r, -k), (-k, -k)]
        return turned(pts)
    raise ValueError(label)


def _draw_object(draw: ImageDraw.ImageDraw, label: str, cx: float, cy: float, r: float, fill, rng) -> None:
    if label == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif label == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=int(r * rng.uniform(0.22, 0.4)))
    elif label == "square" and rng.random() < 0.3:  # rounded, axis-aligned or at 45 degrees
        if rng.random() < 0.5:
            s = r * 0.75
            draw.rounded_rectangle([cx - s, cy - s, cx + s, cy + s], radius=s * 0.2, fill=fill)
        else:
            draw.polygon(_outline(label, cx, cy, r, math.pi / 4, rng), fill=fill)
    else:
        draw.polygon(_outline(label, cx, cy, r, rng.uniform(0, 2 * math.pi), rng), fill=fill)


def _draw_distractor(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, colour, rng) -> None:
    kind = rng.integers(5)
    if kind == 0:  # lightning bolt
        pts = [(0.1, -1), (-0.5, 0.1), (-0.05, 0.1), (-0.25, 1), (0.5, -0.2), (0.05, -0.2), (0.3, -1)]
        draw.polygon([(cx + x * r, cy + y * r) for x, y in pts], fill=colour)
    elif kind == 1:  # spiral
        t = np.linspace(0, rng.uniform(3, 5) * math.pi, 80)
        pts = [(cx + math.cos(a) * r * a / t[-1], cy + math.sin(a) * r * a / t[-1]) for a in t]
        draw.line(pts, fill=colour, width=max(SS, int(r * 0.1)))
    elif kind == 2:  # squiggle
        xs = np.linspace(-r, r, 40)
        f, ph = rng.uniform(2, 5), rng.uniform(0, 6)
        draw.line([(cx + x, cy + math.sin(x / r * f + ph) * r * 0.4) for x in xs], fill=colour,
                  width=max(SS, int(r * 0.12)))
    elif kind == 3:  # barcode
        x = cx - r
        while x < cx + r:
            wd = rng.uniform(0.03, 0.1) * r
            draw.rectangle([x, cy - r * 0.5, x + wd, cy + r * 0.5], fill=colour)
            x += wd + rng.uniform(0.03, 0.12) * r
    else:  # a short word in Pillow's font
        font = ImageFont.load_default(size=max(8, int(r * 0.7)))
        word = "".join(rng.choice(list("abdefhkmnrstuvwy"), int(rng.integers(2, 5))))
        draw.text((cx - r, cy - r * 0.4), word, fill=colour, font=font)


def _damage(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.BoxBlur(float(rng.uniform(0.5, 1.8))))
    if rng.random() < 0.15:
        img = ImageOps.posterize(img, int(rng.integers(3, 6)))
    if rng.random() < 0.15:
        f = rng.uniform(1.5, 2.5)
        small = img.resize((max(1, int(img.width / f)), max(1, int(img.height / f))), Image.NEAREST)
        img = small.resize(img.size, Image.NEAREST)
    if rng.random() < 0.4:
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.6, 1.4)))
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(20, 85)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def heldout_scene(rng: np.random.Generator, n_objects: int = 1) -> tuple[np.ndarray, list[HeldoutObject]]:
    """An RGB scene with ``n_objects`` shapes of distinct classes and 0-3 distractors."""
    w, h = heldout_size(rng)
    canvas = _backdrop(rng, w, h).resize((w * SS, h * SS), Image.BILINEAR)
    labels = list(rng.choice(CLASSES, n_objects, replace=False))
    spans = (0.18, 0.45) if n_objects == 1 else (0.14, 0.3)  # object diameter / short side
    placed: list[tuple[float, float, float, float]] = []
    objects = []
    for i, label in enumerate(labels + [None] * int(rng.integers(0, 4))):
        for _ in range(80):
            r = rng.uniform(*spans) * min(w, h) / 2 if label else rng.uniform(0.05, 0.14) * min(w, h)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            if all(cx + r + 5 < a or c + 5 < cx - r or cy + r + 5 < b or d + 5 < cy - r for a, b, c, d in placed):
                break
        else:
            if label:
                return heldout_scene(rng, n_objects)
            continue
        placed.append((cx - r, cy - r, cx + r, cy + r))
        layer = Image.new("L", canvas.size, 0)
        draw = ImageDraw.Draw(layer)
        local = np.asarray(canvas.resize((w, h)))[int(cy - r):int(cy + r), int(cx - r):int(cx + r)].reshape(-1, 3)
        colour = tuple(int(v) for v in (255 - local.mean(0) + rng.uniform(-60, 60, 3)).clip(0, 255))
        if label:
            _draw_object(draw, label, cx * SS, cy * SS, r * SS, 255, rng)
        else:
            _draw_distractor(draw, cx * SS, cy * SS, r * SS, 255, rng)
        canvas.paste(Image.new("RGB", canvas.size, colour), (0, 0), layer)
        if label:
            mask = np.asarray(layer.resize((w, h), Image.BOX)) > 127
            ys, xs = np.nonzero(mask)
            objects.append(HeldoutObject(str(label), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                                         mask))
    img = _damage(rng, canvas.resize((w, h), Image.LANCZOS))
    return np.array(img.convert("RGB")), objects
