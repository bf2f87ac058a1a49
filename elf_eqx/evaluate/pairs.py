"""The precondition shared by the reference-overlap metrics."""

from __future__ import annotations

from collections.abc import Sequence


def check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Raise ``ValueError`` unless there is at least one hypothesis and exactly one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
