"""Spectral clustering of maps, the number of clusters read from the spectrum (SpRAy's step).

Lapuschkin et al. (2019) cluster a class's downsampled explanations spectrally and read the
number of strategies from the eigengap. Here, for ``n`` maps as unit vectors (rows of ``X``):

1. a k-nearest-neighbour graph (``neighbours`` each, cosine distance, found a block of rows at a
   time so memory grows with ``n``, not ``n^2``);
2. self-tuning affinities (Zelnik-Manor and Perona, 2004): ``exp(-d_ij^2 / (s_i s_j))``, ``s_i``
   the distance to the 7th neighbour, made symmetric (the larger of ``w_ij`` and ``w_ji``);
3. the largest eigenvalues of ``D^-1/2 W D^-1/2`` (those of the normalised Laplacian nearest 0):
   dense for a few thousand maps, else LOBPCG on the sparse matrix;
4. ``k`` from the eigengap, as a ratio of the Laplacian's eigenvalues (:func:`eigengap`), unless
   asked; the ``k`` eigenvectors' rows, normalised (Ng, Jordan and Weiss, 2002), are
   clustered by k-means (k-means++ starts, the best of ``restarts``; seeded).

NumPy and torch only: no SciPy or scikit-learn in the product (scikit-learn is the tests' oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DENSE_UP_TO = 2500  # maps: a dense eigendecomposition is quicker than LOBPCG below this
SCALE_NEIGHBOUR = 7  # the self-tuning scale's neighbour, as Zelnik-Manor and Perona
GAP_RATIO = 5.0  # see eigengap()
MU_FLOOR = 1e-6  # about the eigensolvers' accuracy: below it, an eigenvalue is 0
_BLOCK_CELLS = 25_000_000


@dataclass
class Clustering:
    labels: np.ndarray  # (n,) cluster of each map, 0 .. k-1, largest cluster first
    k: int
    eigenvalues: np.ndarray  # the largest of D^-1/2 W D^-1/2, descending (1 - the Laplacian's smallest)
    chosen: str  # "eigengap" or "asked" or "too few maps"


def neighbours_of(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances) of each row's ``k`` nearest other rows, nearest first; rows are unit vectors."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = len(t)
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    block = max(64, _BLOCK_CELLS // n)  # rows at a time: about 100 MB of similarities, whatever n
    for s in range(0, n, block):
        sim = t[s:s + block] @ t.T
        sim[torch.arange(len(sim)), torch.arange(s, s + len(sim))] = -np.inf  # not its own neighbour
        top, where = sim.topk(k, dim=1)
        idx[s:s + block] = where.numpy()
        dist[s:s + block] = (1.0 - top).clamp_min(0).numpy()
    return idx, dist


def affinity(idx: np.ndarray, dist: np.ndarray) -> torch.Tensor:
    """The symmetric self-tuning affinity matrix, sparse (COO, coalesced)."""
    n, k = idx.shape
    scale = np.maximum(dist[:, min(SCALE_NEIGHBOUR, k) - 1], 1e-6)
    rows = np.repeat(np.arange(n), k)
    cols = idx.ravel()
    w = np.exp(-(dist.ravel() ** 2) / (scale[rows] * scale[cols]))
    both_r, both_c = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    both_w = np.concatenate([w, w]).astype(np.float64)
    m = torch.sparse_coo_tensor(np.stack([both_r, both_c]), both_w, (n, n), check_invariants=False).coalesce()
    # coalesce sums duplicates; the symmetric maximum is wanted: a pair found from both sides counts once
    found = torch.sparse_coo_tensor(np.stack([both_r, both_c]), np.ones(len(both_w)), (n, n),
                                    check_invariants=False).coalesce()
    return torch.sparse_coo_tensor(m.indices(), m.values() / found.values(), (n, n), check_invariants=False).coalesce()


def top_eigen(w: torch.Tensor, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` largest eigenvalues (descending) and their eigenvectors of ``D^-1/2 W D^-1/2``."""
    n = w.shape[0]
    degree = torch.sparse.sum(w, dim=1).to_dense().clamp_min(1e-12)
    inv = degree.rsqrt()
    i, v = w.indices(), w.values()
    a = torch.sparse_coo_tensor(i, v * inv[i[0]] * inv[i[1]], (n, n), check_invariants=False).coalesce()
    if n <= DENSE_UP_TO or n < 3 * count + 1:
        values, vectors = torch.linalg.eigh(a.to_dense())
        return values.flip(0)[:count].numpy(), vectors.flip(1)[:, :count].numpy()
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(n, count, generator=g, dtype=torch.float64)
    start[:, 0] = degree.sqrt()  # the first eigenvector is known: D^1/2 1
    values, vectors = torch.lobpcg(a, k=count, X=start,
                                   largest=True, niter=400, tol=1e-7)
    order = values.argsort(descending=True)
    return values[order].numpy(), vectors[:, order].numpy()


def kmeans(x: np.ndarray, k: int, restarts: int = 10, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Labels of the rows of ``x`` in ``k`` clusters: Lloyd's algorithm from k-means++ starts, the lowest inertia."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    sq = (x * x).sum(1)
    for _ in range(restarts):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
            total = d.sum()
            centres.append(x[rng.choice(len(x), p=d / total)] if total > 0 else x[rng.integers(len(x))])
        c = np.stack(centres)
        labels = np.full(len(x), -1)
        for _ in range(iterations):
            d = sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
            new = d.argmin(1)
            if (new == labels).all():
                break
            labels = new
            c = np.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
        inertia = (sq - 2 * (x * c[labels]).sum(1) + (c[labels] ** 2).sum(1)).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best


def spectral_clusters(x: np.ndarray, max_clusters: int = 8, clusters: int | None = None, neighbours: int | None = None,
                      seed: int = 0) -> Clustering:
    """Cluster the unit rows of ``x``; ``clusters`` fixes k, else the eigengap chooses it."""
    n = len(x)
    if n < 4 or (clusters == 1):
        return Clustering(np.zeros(n, np.int64), 1, np.ones(min(n, 1)), "asked" if clusters == 1 else "too few maps")
    k_nn = neighbours or default_neighbours(n)
    k_nn = min(k_nn, n - 1)
    idx, dist = neighbours_of(x, k_nn)
    w = affinity(idx, dist)
    most = min(max(max_clusters, clusters or 1) + 1, n - 1)
    values, vectors = top_eigen(w, most, seed)
    if clusters is not None:
        k, chosen = min(clusters, n - 1), "asked"
    else:
        k, chosen = eigengap(values, max_clusters), "eigengap"
    if k == 1:
        return Clustering(np.zeros(n, np.int64), 1, values, chosen)
    emb = vectors[:, :k]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = kmeans(emb, k, seed=seed)
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    labels = rank[labels]
    k = int((sizes > 0).sum())
    return Clustering(labels, k, values, chosen)


def eigengap(values: np.ndarray, max_clusters: int) -> int:
    """How many clusters the spectrum shows: ``k`` (2 .. max) whose Laplacian eigenvalue ``mu_(k+1)``
    is at least ``GAP_RATIO`` times ``mu_k`` (the largest such ``k``); else 1. Eigenvalues below
    ``MU_FLOOR`` count as ``MU_FLOOR``: groups with no edge between them, all alike.

    ``mu = 1 - lambda``. A graph of ``k`` nearly separate groups has ``k`` eigenvalues near 0 and the
    next well above; a difference of eigenvalues (the textbook gap) fails on a continuum, such as maps
    that follow objects placed anywhere, whose eigenvalues rise slowly from 0 with gaps as large as
    a large graph's true ones. A ratio tells them apart: groups give ratios of tens to thousands, a
    continuum of 2 to 4.
    """
    mu = np.maximum(1.0 - np.asarray(values, np.float64), MU_FLOOR)
    top = min(max_clusters, len(mu) - 1)
    found = [k for k in range(2, top + 1) if mu[k] / mu[k - 1] >= GAP_RATIO]  # mu[k] is mu_(k+1)
    return max(found) if found else 1


def default_neighbours(n: int) -> int:
    """About ``sqrt(n)``, between 5 and 30: enough to keep a strategy's maps connected, few enough to
    stay sparse, and well below a small class's size (a complete graph has no clusters)."""
    return int(np.clip(round(np.sqrt(n)), 5, 30))
