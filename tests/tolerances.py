"""How close two float32 results must be, by what the two computations are.

* The same arithmetic in the same order (the same jitted program called twice, a cached result
  against a fresh one, a key that a block ignores): bitwise, ``np.testing.assert_array_equal``.
* Different programs for the same math (``lax.scan`` against a Python loop of layers, a fused
  kernel against the explicit einsums, remat against none, one device mesh against another, a
  formula written out in NumPy): XLA may order and fuse the float32 sums differently, and how it
  does depends on the CPU's vector width (``--xla_cpu_max_isa``: AVX-512, AVX2 and SSE4.2 give
  different programs, and FMA contraction rounds once where a multiply and an add round twice).
  Each sum of ``n`` terms may then differ by about ``√n`` roundings of the result's magnitude, and
  through ``layers`` sequential layers those differences add up. :func:`reassociation` is that
  bound with a safety factor, :func:`assert_reassociated` applies it relative to the size of the
  compared values (an absolute error at the largest magnitude, so values near zero in a tensor
  of larger ones do not demand more digits than float32 carries there).

Statistical checks (Monte-Carlo estimates, sample moments) and bf16-against-float32 checks keep
their own tolerances, stated where they are made.
"""

from __future__ import annotations

import math

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7: one rounding of a float32 of magnitude 1
SAFETY = 8.0  # the √n model is an average; reordered sums of correlated terms stray further


def reassociation(terms: int = 1, layers: int = 1) -> float:
    """Relative bound on the difference of two float32 programs computing the same math: each of
    ``layers`` sequential stages sums about ``terms`` products (a matmul's fan-in)."""
    return SAFETY * F32_EPS * math.sqrt(max(terms, 1)) * max(layers, 1)


def assert_reassociated(actual, expected, *, terms: int = 1, layers: int = 1) -> None:
    """``actual`` equals ``expected`` up to float32 reassociation (:func:`reassociation`), the
    error measured against the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = reassociation(terms, layers)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(scale, F32_EPS))
