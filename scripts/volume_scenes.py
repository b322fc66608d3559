"""Synthetic 3D scans for camcli's demo volume classifier: one shape in a noisy, unevenly lit volume.

Each scan holds one sphere, cube or torus at a random place, size and rotation, sampled on a
voxel grid whose spacing differs per axis (1 to 2.5 mm, as scanners' slices are thicker than
their pixels): the same shape looks squashed by different amounts in voxel space. The shape is
drawn from its signed distance with a soft edge (partial volume), the background is Gaussian
noise, and a smooth multiplicative bias field (a low-order polynomial, as MR coils give) makes
the brightness uneven. Every scan also returns the shape's mask, for pointing: the peak of a
map should fall inside it.

scripts/heldout_volumes.py draws the held-out scans with code written apart from this one.
"""

from __future__ import annotations

import numpy as np

CLASSES = ["sphere", "cube", "torus"]
SIDE = 32  # voxels per axis


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def signed_distance(kind: str, q: np.ndarray, radius: float) -> np.ndarray:
    """Distance in mm to the shape's surface (negative inside); ``q`` (..., 3) in the shape's frame."""
    if kind == "sphere":
        return np.linalg.norm(q, axis=-1) - radius
    if kind == "cube":
        half = radius * 0.8
        return np.abs(q).max(-1) - half
    ring, tube = radius * 0.72, radius * 0.33
    rho = np.linalg.norm(q[..., :2], axis=-1)
    return np.sqrt((rho - ring) ** 2 + q[..., 2] ** 2) - tube


def bias_field(rng: np.random.Generator, grid: np.ndarray) -> np.ndarray:
    """exp of a random quadratic in the normalised coordinates: brightness from about 0.7 to 1.4."""
    g = grid / np.abs(grid).max()
    terms = [g[..., 0], g[..., 1], g[..., 2], g[..., 0] * g[..., 1], g[..., 1] * g[..., 2], g[..., 0] ** 2]
    coeffs = rng.uniform(-0.18, 0.18, size=len(terms))
    return np.exp(sum(c * t for c, t in zip(coeffs, terms)))


def make_volume(rng: np.random.Generator, kind: str, side: int = SIDE):
    """(volume (X, Y, Z) float32, mask bool, spacing (3,) mm)."""
    spacing = rng.choice([1.0, 1.25, 1.5, 2.0, 2.5], size=3)
    extent = spacing * side
    radius = rng.uniform(0.2, 0.3) * float(extent.min())
    margin = radius * 1.05
    centre = np.array([rng.uniform(margin, e - margin) for e in extent])
    idx = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).astype(np.float32)
    mm = (idx + 0.5) * spacing
    rot = random_rotation(rng)
    q = (mm - centre) @ rot  # into the shape's frame
    d = signed_distance(kind, q, radius)
    edge = float(spacing.mean()) * 0.5
    shape = 1.0 / (1.0 + np.exp(np.clip(d / edge, -30, 30)))
    contrast = rng.uniform(0.5, 1.0)
    noise = rng.uniform(0.08, 0.25)
    volume = (rng.uniform(0.1, 0.3) + contrast * shape) * bias_field(rng, mm - extent / 2)
    volume = volume + rng.normal(0.0, noise, size=volume.shape)
    return volume.astype(np.float32), d <= 0, spacing


def make_batch(seed: int, count: int, side: int = SIDE):
    """``count`` scans of balanced classes: (volumes (N, X, Y, Z), labels (N,), masks, spacings)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    out = [make_volume(rng, CLASSES[c], side) for c in labels]
    return (np.stack([v for v, _, _ in out]), labels, np.stack([m for _, m, _ in out]),
            np.stack([s for _, _, s in out]))
