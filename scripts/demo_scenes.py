"""Training scenes for the demo model: the six shapes among distractors, on varied backgrounds.

Each scene is an RGB uint8 array at its own size (any aspect ratio up to 4:1) plus the
ground-truth objects (class name and pixel box). Drawn with OpenCV. The generator is
deterministic for a given ``numpy.random.Generator``, so the training set and ``sample_images/``
are reproducible from their seeds. The held-out scenes the model is judged on come from a
different generator (``heldout_scenes.py``: Pillow, other backgrounds, other distractors).

What the variety is for (each one closes a shortcut a narrow model takes):

- backgrounds from seven families (flat, gradients, multi-scale noise, stripes, grids, blotches,
  clutter of lines and dots), so that no texture or colour means "object";
- distractors that are none of the six classes but share their parts (crescents and half discs
  beside circles, T and L shapes beside crosses, hearts, arrows, letters, zigzags, blobs), so that
  "a round edge" or "a straight arm" is not enough;
- each class drawn in several proportions (any triangle with no angle under 35 degrees, stars of
  inner radius 0.35-0.55, crosses with thin and thick arms, rings thin and thick) and fills
  (solid, gradient, textured, outlined), at sizes from small to half the picture, at any angle;
- images of aspect ratio up to 4:1, which camcli squeezes to the square input, so the model
  learns squeezed shapes; colour, contrast, blur, noise and JPEG damage applied afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
DISTRACTORS = ("crescent", "half_disc", "tee", "ell", "heart", "arrow", "letter", "zigzag", "blob")
LETTERS = "ABEFGHJKLMNPRSUVWYZ2345679"


@dataclass(frozen=True)
class SceneObject:
    label: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive-exclusive
    #: (h, w) bool: the object's own pixels (the demo segmenter's truth; objects never overlap)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


def scene_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): short side 160-320 px; half the scenes near square, the rest up to 4:1."""
    short = int(rng.integers(160, 321))
    ratio = rng.uniform(1.0, 1.4) if rng.random() < 0.5 else float(np.exp(rng.uniform(np.log(1.4), np.log(4.0))))
    long = int(short * ratio)
    return (long, short) if rng.random() < 0.5 else (short, long)


# ---------------------------------------------------------------- backgrounds

def _noise(rng, w, h, scale) -> np.ndarray:
    small = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """One of seven families, sometimes two blended; float32 RGB."""
    def one(kind: str) -> np.ndarray:
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if kind == "flat":
            return np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if kind == "gradient":
            a = rng.uniform(0, np.pi)
            t = xx * np.cos(a) + yy * np.sin(a)
            t = (t - t.min()) / max(1e-6, t.max() - t.min())
            return c0 * (1 - t[..., None]) + c1 * t[..., None]
        if kind == "noise":
            img = np.broadcast_to(c0, (h, w, 3)).astype(np.float32).copy()
            for scale in (rng.integers(2, 6), rng.integers(8, 40)):
                img += _noise(rng, w, h, int(scale)) * rng.uniform(8, 35)
            return img
        if kind == "stripes":
            period, a = rng.uniform(5, 40), rng.uniform(0, np.pi)
            s = np.sin((xx * np.cos(a) + yy * np.sin(a)) / period * 2 * np.pi)
            s = np.sign(s) if rng.random() < 0.4 else s
            t = (s[..., None] + 1) / 2 * rng.uniform(0.2, 1.0)
            return c0 * (1 - t) + c1 * t
        if kind == "grid":
            p = rng.uniform(8, 40)
            width = rng.uniform(1, 3)
            line = (np.abs(((xx + rng.uniform(0, p)) % p) - p / 2) > p / 2 - width) | \
                   (np.abs(((yy + rng.uniform(0, p)) % p) - p / 2) > p / 2 - width)
            return np.where(line[..., None], c1, c0).astype(np.float32)
        if kind == "blotches":
            n = _noise(rng, w, h, int(rng.integers(20, 60)))[..., :1]
            t = 1 / (1 + np.exp(-n * rng.uniform(2, 8)))
            return c0 * (1 - t) + c1 * t
        img = np.broadcast_to(c0, (h, w, 3)).astype(np.float32).copy()  # clutter
        img += _noise(rng, w, h, int(rng.integers(3, 10))) * rng.uniform(5, 25)
        img = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(6, 30))):
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(img, p0, p1, rng.integers(0, 256, 3).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
            else:
                cv2.circle(img, p0, int(rng.integers(1, 5)), rng.integers(0, 256, 3).tolist(), -1, cv2.LINE_AA)
        return img.astype(np.float32)

    kinds = ("flat", "gradient", "noise", "stripes", "grid", "blotches", "clutter")
    img = one(kinds[rng.integers(len(kinds))])
    if rng.random() < 0.35:
        t = rng.uniform(0.2, 0.6)
        img = img * (1 - t) + one(kinds[rng.integers(len(kinds))]) * t
    return np.clip(img, 0, 255).astype(np.float32)


# ---------------------------------------------------------------- shapes

def _rot(points: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (points @ np.array([[c, s], [-s, c]]) + [cx, cy]).astype(np.float32)


def _polys(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(points * 4).astype(np.int32)]  # 2 fractional bits (shift=2 below)


def shape_mask(rng: np.random.Generator, label: str, w: int, h: int, cx: float, cy: float, r: float) -> np.ndarray:
    """The shape (one of the classes or a distractor) of radius about ``r`` as a 0-255 mask."""
    mask = np.zeros((h, w), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    centre = (int(cx * 4), int(cy * 4))

    def fill(points):
        cv2.fillPoly(mask, _polys(_rot(points, cx, cy, angle)), 255, cv2.LINE_AA, shift=2)

    if label in ("circle", "ring", "crescent", "half_disc"):
        cv2.circle(mask, centre, int(r * 4), 255, -1, cv2.LINE_AA, shift=2)
        if label == "ring":
            hole = r * (1 - rng.uniform(0.18, 0.45))
            cv2.circle(mask, centre, int(hole * 4), 0, -1, cv2.LINE_AA, shift=2)
        elif label == "crescent":
            d = r * rng.uniform(0.35, 0.7)
            off = (int((cx + d * np.cos(angle)) * 4), int((cy + d * np.sin(angle)) * 4))
            cv2.circle(mask, off, int(r * rng.uniform(0.8, 1.0) * 4), 0, -1, cv2.LINE_AA, shift=2)
        elif label == "half_disc":
            cut = np.zeros_like(mask)
            half = _rot(np.array([[-1.1, 0], [1.1, 0], [1.1, 1.2], [-1.1, 1.2]]) * r, cx, cy, angle)
            cv2.fillPoly(cut, _polys(half), 255, cv2.LINE_AA, shift=2)
            np.minimum(mask, 255 - cut, out=mask)
    elif label == "square":
        a = rng.uniform(0.85, 1.15)
        fill(np.array([[-a, -1 / a], [a, -1 / a], [a, 1 / a], [-a, 1 / a]]) * r * 0.78)
    elif label == "triangle":
        while True:
            arcs = rng.uniform(70, 180, 2)
            arcs = np.append(arcs, 360 - arcs.sum())
            if arcs.min() >= 70:
                break
        a = np.deg2rad(np.cumsum(np.concatenate([[0], arcs[:2]])))
        fill(np.stack([np.cos(a), np.sin(a)], 1) * r)
    elif label == "star":
        a = np.deg2rad(np.arange(10) * 36)
        rad = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.35, 0.55))
        fill(np.stack([np.cos(a) * rad, np.sin(a) * rad], 1))
    elif label in ("cross", "tee", "ell"):
        k = rng.uniform(0.17, 0.38)
        arms = [(1, 0), (-1, 0), (0, 1), (0, -1)] if label == "cross" else \
            [(1, 0), (-1, 0), (0, 1)] if label == "tee" else [(1, 0), (0, 1)]
        for dx, dy in arms:
            length = r * rng.uniform(0.8, 1.0)
            x0, x1 = sorted([-k * r if dx == 0 else 0, dx * length if dx else k * r])
            y0, y1 = sorted([-k * r if dy == 0 else 0, dy * length if dy else k * r])
            x0, y0 = min(x0, -k * r), min(y0, -k * r)
            x1, y1 = max(x1, k * r), max(y1, k * r)
            fill(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    elif label == "heart":
        t = np.linspace(0, 2 * np.pi, 60)
        pts = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
        fill(pts / 17 * r)
    elif label == "arrow":
        k = rng.uniform(0.15, 0.3)
        fill(np.array([[-1, -k], [0.3, -k], [0.3, -0.6], [1, 0], [0.3, 0.6], [0.3, k], [-1, k]]) * r)
    elif label == "letter":
        font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)[rng.integers(3)]
        ch = LETTERS[rng.integers(len(LETTERS))]
        scale = r / 14
        thick = max(2, int(r / 8))
        (tw, th), _ = cv2.getTextSize(ch, font, scale, thick)
        cv2.putText(mask, ch, (int(cx - tw / 2), int(cy + th / 2)), font, scale, 255, thick, cv2.LINE_AA)
    elif label == "zigzag":
        n = int(rng.integers(3, 7))
        xs = np.linspace(-r, r, n + 1)
        ys = np.where(np.arange(n + 1) % 2 == 0, -0.4 * r, 0.4 * r)
        pts = _rot(np.stack([xs, ys], 1), cx, cy, angle)
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, max(2, int(r * rng.uniform(0.1, 0.25))),
                      cv2.LINE_AA)
    elif label == "blob":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        rad = np.ones_like(t)
        for f in range(2, 6):
            rad += rng.uniform(0.08, 0.25) * np.sin(f * t + rng.uniform(0, 2 * np.pi))
        fill(np.stack([np.cos(t) * rad, np.sin(t) * rad], 1) * r * 0.8)
    else:
        raise ValueError(label)
    return mask


def _contrasting_colour(rng: np.random.Generator, patch: np.ndarray, low: bool) -> np.ndarray:
    """A colour far from the patch's mean (or, for a low-contrast object, at least 60 away)."""
    mean = patch.reshape(-1, 3).mean(0)
    best, best_d = rng.uniform(0, 255, 3), -1.0
    for _ in range(16):
        c = rng.uniform(0, 255, 3)
        d = float(np.abs(c - mean).sum())
        if low and 90 < d < 160:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """Fill the mask solid, with a gradient or a texture, sometimes with an outline (in place)."""
    x0, y0, x1, y1 = (max(0, box[0] - 3), max(0, box[1] - 3), box[2] + 3, box[3] + 3)
    region, m = img[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    h, w = m.shape
    colour = _contrasting_colour(rng, region, low=rng.random() < 0.1)
    style = rng.random()
    if style < 0.6:
        paint = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
        paint = paint * rng.uniform(0.85, 1.0, (h, w, 1)).astype(np.float32) if rng.random() < 0.5 else paint
    elif style < 0.8:
        other = np.clip(colour + rng.uniform(-90, 90, 3), 0, 255)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, np.pi)
        t = np.clip((xx * np.cos(a) + yy * np.sin(a)) / max(h, w), 0, 1)[..., None]
        paint = colour * (1 - t) + other * t
    else:
        paint = colour + _noise(rng, w, h, int(rng.integers(2, 6))) * rng.uniform(10, 30)
    alpha = (m.astype(np.float32) / 255.0)[..., None]
    region[:] = region * (1 - alpha) + paint * alpha
    if rng.random() < 0.2:  # an outline in another colour
        edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8),
                                iterations=int(rng.integers(1, 3))).astype(np.float32)[..., None] / 255.0
        region[:] = region * (1 - edge) + rng.uniform(0, 255, 3) * edge
    return img


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Colour, contrast, blur, noise and JPEG damage, each on some scenes."""
    img = img.astype(np.float32)
    if rng.random() < 0.5:
        img = (img - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        img = img * rng.uniform(0.75, 1.25, 3)
    if rng.random() < 0.1:
        img = np.repeat(img.mean(2, keepdims=True), 3, 2)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.25:
        img = img + rng.normal(0, rng.uniform(3, 14), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))])
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(img)


def _place(rng, w, h, r_range, taken, gap=4, tries=60, inside=1.0):
    lo, hi = r_range
    for _ in range(tries):
        r = rng.uniform(lo, hi) * min(w, h)
        cx, cy = rng.uniform(r * inside, w - r * inside), rng.uniform(r * inside, h - r * inside)
        bx = (cx - r, cy - r, cx + r, cy + r)
        if all(bx[2] + gap < t[0] or t[2] + gap < bx[0] or bx[3] + gap < t[1] or t[3] + gap < bx[1] for t in taken):
            return cx, cy, r
    return None


def make_scene(rng: np.random.Generator, size: tuple[int, int], n_objects: int = 1,
               labels: list[str] | None = None, distractors: int | None = None,
               ) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw ``n_objects`` shapes of distinct classes and some distractors at non-overlapping places."""
    w, h = size
    img = background(rng, w, h)
    labels = labels or [str(c) for c in rng.choice(CLASSES, size=n_objects, replace=False)]
    n_distract = int(rng.choice([0, 1, 1, 2, 3])) if distractors is None else distractors
    r_range = (0.10, 0.42) if n_objects == 1 else (0.09, 0.26)
    objects: list[SceneObject] = []
    taken: list[tuple[float, float, float, float]] = []
    kinds = list(labels) + [str(rng.choice(DISTRACTORS)) for _ in range(n_distract)]
    for i, label in enumerate(kinds):
        target = i < len(labels)  # distractors may be cut by the border, the objects are whole
        spot = _place(rng, w, h, r_range if target else (0.06, 0.2), taken, inside=1.0 if target else 0.6)
        if spot is None:
            if target:  # rare (two large objects in a narrow picture): draw another scene
                return make_scene(rng, size, n_objects, labels, distractors)
            continue
        cx, cy, r = spot
        mask = shape_mask(rng, label, w, h, cx, cy, r)
        ys, xs = np.nonzero(mask > 127)
        if len(xs) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        img = _paint(rng, img, mask, box)
        taken.append((cx - r, cy - r, cx + r, cy + r))
        if target:
            objects.append(SceneObject(label, box, mask > 127))
    return _degrade(rng, img), objects
