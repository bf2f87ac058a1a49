"""Kernels XLA's cost model cannot see into: a correction of the compiler's step-time estimate for
the Pallas flash-attention backward pass (docs/method.md#dry-run).

JAX's Pallas flash-attention kernel for TPUs attaches a cost estimate to its forward kernel only;
its two backward kernels (``dK, dV`` and ``dQ``) carry none, so XLA's cost model counts none of
their FLOPs and only part of their time (compiled alone, forward + backward reports the forward
kernel's FLOPs). The backward recomputes the scores and runs five more ``N×N×d`` products
(``S = QKᵀ`` twice, ``dV = PᵀdO``, ``dP = dO·Vᵀ`` twice, ``dK = dSᵀQ``, ``dQ = dS·K``): 3.5 times the
forward's FLOPs. The correction puts each backward pass at 3.5 times the forward kernel's own
estimated time (the rate the cost model gives the forward kernel) in place of what it counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from elf_eqx.aot.analysis import analyze
from elf_eqx.aot.compile import compile_for_target
from elf_eqx.aot.targets import Target
from elf_eqx.nn.attention import pallas_attention
from elf_eqx.parallel.mesh import MeshConfig, make_mesh

BACKWARD_TO_FORWARD_FLOPS = 3.5


def _estimate(fn, shape: jax.ShapeDtypeStruct, target: Target) -> float:
    mesh = make_mesh(MeshConfig(1, 1, 1), target.devices()[:1])
    return analyze(compile_for_target(fn, (shape, shape, shape), target=target, mesh=mesh), target)["compiler_estimate_s"]


def pallas_backward_correction(
    target: Target, grad_rows: Sequence[int], *, tokens: int, heads: int, head_dim: int, dtype: jnp.dtype, layers: int
) -> dict[str, float]:
    """Seconds to add to a step's compiler estimate for the Pallas attention backward passes of
    ``layers`` layers, one forward-backward per entry of ``grad_rows`` (rows per device):
    ``{"counted_s", "expected_s", "correction_s"}`` (counted: what the cost model gave the backward;
    expected: 3.5 × the forward kernel's estimate)."""
    counted = expected = 0.0
    scale = head_dim**-0.5
    forward = lambda q, k, v: pallas_attention(q, k, v, scale)  # noqa: E731
    both = lambda q, k, v: jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v).astype(jnp.float32)), (0, 1, 2))(q, k, v)  # noqa: E731
    for rows in grad_rows:
        if rows < 1:
            continue
        shape = jax.ShapeDtypeStruct((rows, tokens, heads, head_dim), dtype)
        t_forward, t_both = _estimate(forward, shape, target), _estimate(both, shape, target)
        counted += layers * (t_both - t_forward)
        expected += layers * BACKWARD_TO_FORWARD_FLOPS * t_forward
    return {"counted_s": counted, "expected_s": expected, "correction_s": expected - counted}
