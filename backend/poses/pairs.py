"""Which image pairs to match (numpy only).

Exhaustive matching costs n(n-1)/2 pairs, each about ``a + b F^2`` seconds for F features per image (DTU's 49
images at 8192 features: 1176 pairs, 87 s on 2 cores; plush_dog's 84 at about 1600: 3486 pairs, 19-28 s). Every
pair is matched while that is affordable (:func:`choose_matching`): photos taken as people take them are seldom
in an order that neighbour pairs could follow, and a view missed by pairing is lost. Larger sets match only
likely pairs: neighbours in file-name order for video-like captures, and for everything else the most similar
images by a small bag-of-visual-words retrieval built from the SIFT descriptors already extracted (no vocabulary
file to download; this also closes loops in sequential captures).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

#: Up to this many images, ``auto`` always matches every pair.
EXHAUSTIVE_ALWAYS_IMAGES = 60
#: Up to this many images, ``auto`` matches every pair when it is estimated to take at most
#: :data:`EXHAUSTIVE_BUDGET_S` (see :func:`estimated_match_seconds`).
EXHAUSTIVE_MAX_IMAGES = 200
EXHAUSTIVE_BUDGET_S = 600.0
#: Seconds per pair on one core: a fixed part (loading, verification) and one growing with features squared,
#: fitted to DTU 65 (8192 features, 74 ms a pair on 2 cores) and plush_dog (about 1600 features, 6-8 ms).
PAIR_SECONDS_FIXED = 0.007
PAIR_SECONDS_PER_FEATURE2 = 2.1e-9

Pair = tuple[int, int]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in _DIGITS.split(name)]


def looks_sequential(names: Sequence[str], min_fraction: float = 0.9) -> bool:
    """Whether file names look like frames of one sequence (a shared stem, consecutive numbers).

    True when at least ``min_fraction`` of the names are ``<prefix><number>.<ext>`` with one common prefix and
    the sorted numbers advance by a constant step most of the time (video frames, burst or interval shots).
    """
    if len(names) < 3:
        return False
    parsed = []
    for name in names:
        stem = name.rsplit(".", 1)[0]
        match = re.fullmatch(r"(.*?)(\d+)", stem)
        if match:
            parsed.append((match.group(1), int(match.group(2))))
    if len(parsed) < min_fraction * len(names):
        return False
    prefixes: dict[str, list[int]] = {}
    for prefix, num in parsed:
        prefixes.setdefault(prefix, []).append(num)
    prefix, nums = max(prefixes.items(), key=lambda kv: len(kv[1]))
    if len(nums) < min_fraction * len(names):
        return False
    steps = np.diff(np.sort(np.asarray(nums)))
    if not len(steps) or np.median(steps) <= 0:
        return False
    return bool(np.mean(steps == np.median(steps)) >= 0.8)


def exhaustive_pairs(n: int) -> list[Pair]:
    """Every pair (i, j), i < j."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def sequential_pairs(n: int, overlap: int = 10, quadratic: bool = True) -> list[Pair]:
    """Each image with its next ``overlap`` images, and (``quadratic``) with those 2^k images ahead."""
    pairs: set[Pair] = set()
    for i in range(n):
        for d in range(1, overlap + 1):
            if i + d < n:
                pairs.add((i, i + d))
        if quadratic:
            for k in range(overlap):
                d = 2 ** (k + 1)
                if d > overlap and i + d < n:
                    pairs.add((i, i + d))
    return sorted(pairs)


def _kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Plain Lloyd k-means on the rows of ``x`` (float32); returns (k, d) centres."""
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        labels = _assign(x, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        counts = np.bincount(labels, minlength=k).astype(np.float32)
        empty = counts == 0
        centres[~empty] = sums[~empty] / counts[~empty, None]
        if empty.any():  # re-seed empty clusters with random descriptors
            centres[empty] = x[rng.choice(len(x), int(empty.sum()), replace=False)]
    return centres


def _assign(x: np.ndarray, centres: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Index of the nearest centre for each row of ``x``."""
    c2 = (centres**2).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        block = x[s:s + chunk]
        out[s:s + chunk] = np.argmin(c2[None] - 2.0 * block @ centres.T, axis=1)
    return out


def retrieval_pairs(descriptors: Sequence[np.ndarray], k: int = 20, words: int = 256,
                    per_image: int = 1500, seed: int = 0) -> list[Pair]:
    """Pairs of visually similar images from a tf-idf bag of visual words over SIFT descriptors.

    Args:
        descriptors: one (F_i, 128) array per image (uint8 or float).
        k: neighbours kept for each image (pairs are symmetric, so an image may get more).
        words: vocabulary size (k-means on a sample of all descriptors).
        per_image: descriptors drawn per image, to bound the cost.
    """
    n = len(descriptors)
    if n < 2:
        return []
    if n - 1 <= k:
        return exhaustive_pairs(n)
    rng = np.random.default_rng(seed)
    subsets = []
    for d in descriptors:
        d = np.asarray(d, dtype=np.float32)
        if len(d) > per_image:
            d = d[rng.choice(len(d), per_image, replace=False)]
        subsets.append(d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12))
    sample = np.concatenate([s[: max(1, 20_000 // n)] for s in subsets if len(s)])
    words = int(min(words, max(8, len(sample) // 20)))
    vocab = _kmeans(sample, words, iters=8, rng=rng)
    hist = np.zeros((n, words), dtype=np.float64)
    for i, s in enumerate(subsets):
        if len(s):
            hist[i] = np.bincount(_assign(s, vocab), minlength=words)
    idf = np.log(n / np.maximum((hist > 0).sum(0), 1))
    tfidf = hist / np.maximum(hist.sum(1, keepdims=True), 1) * idf
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
    sim = tfidf @ tfidf.T
    np.fill_diagonal(sim, -np.inf)
    pairs: set[Pair] = set()
    for i in range(n):
        for j in np.argsort(-sim[i])[:k]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def estimated_match_seconds(n_pairs: int, mean_features: float, threads: int) -> float:
    """Rough wall seconds to match and verify ``n_pairs`` pairs of images with ``mean_features`` SIFT features."""
    per_pair = PAIR_SECONDS_FIXED + PAIR_SECONDS_PER_FEATURE2 * float(mean_features) ** 2
    return n_pairs * per_pair / max(1, threads)


def choose_matching(names: Sequence[str], mean_features: float | None = None, threads: int = 2) -> str:
    """The matching strategy ``auto`` picks: ``exhaustive``, ``sequential`` or ``retrieval``.

    Every pair up to :data:`EXHAUSTIVE_ALWAYS_IMAGES` images, and up to :data:`EXHAUSTIVE_MAX_IMAGES` while
    :func:`estimated_match_seconds` stays within :data:`EXHAUSTIVE_BUDGET_S` (``mean_features`` None: assume
    the budget holds).
    """
    n = len(names)
    if n <= EXHAUSTIVE_ALWAYS_IMAGES:
        return "exhaustive"
    if n <= EXHAUSTIVE_MAX_IMAGES and (mean_features is None or estimated_match_seconds(
            n * (n - 1) // 2, mean_features, threads) <= EXHAUSTIVE_BUDGET_S):
        return "exhaustive"
    return "sequential" if looks_sequential(names) else "retrieval"


def retrieval_neighbours(n: int) -> int:
    """How many retrieval neighbours to match for each of ``n`` images (grows slowly with the set)."""
    return int(min(n - 1, max(10, round(4 * math.log2(max(n, 2))))))
