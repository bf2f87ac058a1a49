"""Unigram entropy of generated text (docs/method.md#evaluation): diversity, to read beside Gen. PPL.

In nats (natural log), as the reference evaluation computes it; a sample that repeats one token
has entropy 0, one of ``n`` distinct tokens at most ``log n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unigram_entropy(token_ids: Sequence[int]) -> float:
    """Entropy in nats of the empirical unigram distribution of one sample's ``(T,)`` token ids;
    0 for an empty sample."""
    if len(token_ids) == 0:
        return 0.0
    _, counts = np.unique(np.asarray(token_ids), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mean_entropy(samples: Sequence[Sequence[int]]) -> tuple[float, int]:
    """``(mean per-sample unigram entropy over the non-empty samples, number of empty samples)``
    of ``N`` samples' token ids; the mean is NaN when every sample is empty."""
    values = [unigram_entropy(ids) for ids in samples if len(ids)]
    empty = len(samples) - len(values)
    return (float(np.mean(values)) if values else float("nan")), empty
