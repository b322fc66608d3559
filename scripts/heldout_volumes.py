"""Held-out scans for the demo volume classifier, drawn by code written apart from the training
generator (scripts/volume_scenes.py), so that the figures measure shapes, not one generator's
habits.

Differences on purpose: a shape's voxels are the share of 8 sub-voxel samples inside it (no
signed distance, no sigmoid edge); rotations are composed from three Euler angles; the torus is
fatter; the noise is Rician (the magnitude of a complex Gaussian signal, as in MR) instead of
Gaussian; the uneven brightness is three broad Gaussian blobs instead of a polynomial; voxel
spacings come from another set.
"""

from __future__ import annotations

import numpy as np

CLASSES = ["sphere", "cube", "torus"]


def euler(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def inside(kind: str, p: np.ndarray, size: float) -> np.ndarray:
    """Whether points ``p`` (..., 3), in the shape's frame, lie in a shape of ``size`` mm."""
    if kind == "sphere":
        return (p ** 2).sum(-1) <= size ** 2
    if kind == "cube":
        return np.all(np.abs(p) <= size * 0.78, axis=-1)
    ring, tube = size * 0.65, size * 0.38
    return (np.hypot(p[..., 0], p[..., 1]) - ring) ** 2 + p[..., 2] ** 2 <= tube ** 2


def heldout_volume(rng: np.random.Generator, kind: str, side: int = 32):
    """(volume (X, Y, Z) float32, mask bool, spacing (3,) mm)."""
    spacing = np.array([rng.choice([1.1, 1.6, 2.2]) for _ in range(3)])
    extent = spacing * side
    size = rng.uniform(0.19, 0.29) * extent.min()
    centre = np.array([rng.uniform(size * 1.1, e - size * 1.1) for e in extent])
    turn = euler(*rng.uniform(0, 2 * np.pi, size=3))
    offsets = (np.stack(np.meshgrid(*[[0.25, 0.75]] * 3, indexing="ij"), -1).reshape(-1, 3))
    idx = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    share = np.zeros((side,) * 3)
    for o in offsets:  # 8 sub-voxel samples per voxel
        share += inside(kind, ((idx + o) * spacing - centre) @ turn.T, size)
    share /= len(offsets)
    centre_mm = (idx + 0.5) * spacing
    light = np.ones((side,) * 3)
    for _ in range(3):
        at = rng.uniform(0, 1, 3) * extent
        light += rng.uniform(-0.25, 0.35) * np.exp(-((centre_mm - at) ** 2).sum(-1) / (2 * (0.4 * extent.max()) ** 2))
    signal = (rng.uniform(0.15, 0.35) + rng.uniform(0.45, 0.9) * share) * light
    sigma = rng.uniform(0.06, 0.2)
    volume = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
    return volume.astype(np.float32), share >= 0.5, spacing


def heldout_batch(seed: int, count: int, side: int = 32):
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    out = [heldout_volume(rng, CLASSES[c], side) for c in labels]
    return (np.stack([v for v, _, _ in out]), labels, np.stack([m for _, m, _ in out]),
            np.stack([s for _, _, s in out]))
