"""Optimizers for ELF: Muon (default, as the reference) or AdamW, behind a global-norm clip.

Muon orthogonalises the updates of the matrix weights; everything else (biases, norm scales,
learned tokens) takes the AdamW branch inside ``optax.contrib.muon``, with optax's defaults
(b1 0.9, b2 0.999) as the reference uses them. Our blocks are stacked along a leading ``depth``
axis, so their kernels are ``(depth, in, out)`` and are orthogonalised per layer (the depth
axis is a batch axis).

On accelerators the Newton–Schulz iterations run in bfloat16 (:func:`muon`); the momentum and
every other optimizer state stay float32, and the state has the same tree as
``optax.contrib.muon``'s, so checkpoints move between backends. On a mesh of several devices
the Newton–Schulz work is shared (``share_newton_schulz``, :mod:`elf_eqx.training.ns_shared`):
each matrix is orthogonalised by one device and the results are gathered, instead of every
data-parallel device orthogonalising every matrix; the values are the same. In float32 and
unshared the optimizer *is* ``optax.contrib.muon``; outside a mesh the shared one computes it op
for op.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike
from optax.contrib import MuonDimensionNumbers, MuonState

from elf_eqx.config import ComputeDtype, backend_of, precision_policy
from elf_eqx.errors import ConfigError
from elf_eqx.nn.axes import LAYERS, leaf_axes
from elf_eqx.precision import scope
from elf_eqx.training.ns_plan import MatrixBatch, NSPlan, newton_schulz_flops
from elf_eqx.training.ns_shared import from_matrices, matrix_batch_view, orthogonalize_shared, to_matrices
from elf_eqx.tree_paths import key_name

# optax.contrib.muon's defaults for its Adam side, which the reference relies on.
MUON_ADAM_B2 = 0.999
ADAMW_B2 = 0.95
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def _muon_matrix(path: tuple, axes: tuple[str, ...] | None) -> MuonDimensionNumbers | None:
    """The dimension numbers of a Muon matrix (a layer's two-axis ``weight``; a stacked layer's
    ``layers`` axis is a batch axis), or ``None`` for a leaf Muon hands to AdamW."""
    if axes is None or key_name(path[-1]) != "weight":
        return None
    stacked = int(axes[0] == LAYERS)
    return MuonDimensionNumbers(reduction_axis=stacked, output_axis=1 + stacked) if len(axes) == 2 + stacked else None


def muon_dimension_numbers(model: eqx.Module):
    """A pytree like ``model`` with :class:`MuonDimensionNumbers` on each matrix weight and ``None``
    elsewhere. Which arrays are matrices, and which are stacked, comes from the logical axes the
    layers declare (:mod:`elf_eqx.nn.axes`), not from attribute paths."""
    entries = leaf_axes(model)
    treedef = jax.tree_util.tree_structure(model)
    return jax.tree_util.tree_unflatten(treedef, [_muon_matrix(path, axes) for path, _, axes in entries])


def muon_flops(model: eqx.Module, ns_steps: int = 5) -> float:
    """FLOPs of Muon's Newton–Schulz orthogonalisation in one optimizer step: per matrix (``m ≤ n``
    after transposing) and iteration, ``A = XXᵀ`` (2m²n), ``A·A`` (2m³) and ``B·X`` (2m²n); stacked
    matrices once per layer (docs/method.md#optimisation)."""
    return sum(b.layers * newton_schulz_flops(b.rows, b.cols, ns_steps) for b in muon_matrices(model))


def muon_matrices(model: eqx.Module) -> list[MatrixBatch]:
    """Muon's matrices of ``model``, one :class:`MatrixBatch` per matrix leaf, in leaf order."""
    out = []
    for path, leaf, axes in leaf_axes(model):
        dim = _muon_matrix(path, axes)
        if dim is not None:
            out.append(matrix_batch_view(tuple(leaf.shape), dim)[1])
    return out


def newton_schulz_plan(model: eqx.Module, devices: int, ns_steps: int = 5) -> NSPlan:
    """How shared Newton–Schulz divides ``model``'s matrices over ``devices`` (:class:`NSPlan`)."""
    return NSPlan.make(muon_matrices(model), devices, ns_steps)


def _is_dims_leaf(x) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers) or isinstance(x, optax.MaskedNode)


def _is_dims(x) -> bool:
    return isinstance(x, MuonDimensionNumbers)


_BATCHED = MuonDimensionNumbers(reduction_axis=1, output_axis=2)


def orthogonalize_tree(mu_hat, dims, coeffs, *, ns_dtype: DTypeLike, ns_steps: int, eps: float, share: bool):
    """Newton–Schulz on every Muon leaf of ``mu_hat`` (``dims`` gives their dimension numbers), in
    ``ns_dtype``, the results cast back to each leaf's dtype. With ``share``, traced under a mesh of
    several devices (:func:`elf_eqx.parallel.mesh.traced_on`), the work is divided over its devices
    (:mod:`elf_eqx.training.ns_shared`); otherwise every leaf is orthogonalised here."""
    orthogonalize = optax.contrib._muon.orthogonalize_via_newton_schulz
    mesh = jax.sharding.get_abstract_mesh()
    if not share or mesh.empty or mesh.size == 1:
        return jax.tree_util.tree_map(
            lambda x, d: orthogonalize(x.astype(ns_dtype), coeffs, ns_steps, "frobenius", eps, d).astype(x.dtype),
            mu_hat, dims, is_leaf=_is_dims)
    leaves, treedef = jax.tree_util.tree_flatten(mu_hat)
    leaf_dims = jax.tree_util.tree_leaves(dims, is_leaf=_is_dims)
    if len(leaf_dims) != len(leaves):
        raise ValueError(f"{len(leaves)} Muon leaves but {len(leaf_dims)} dimension numbers")
    plan = NSPlan.make([matrix_batch_view(x.shape, d)[1] for x, d in zip(leaves, leaf_dims)], mesh.size, ns_steps)
    batches = [to_matrices(x.astype(ns_dtype), d) for x, d in zip(leaves, leaf_dims)]
    on_batch = lambda m, c: orthogonalize(m, c, ns_steps, "frobenius", eps, _BATCHED)  # noqa: E731
    done = orthogonalize_shared(batches, plan, on_batch, coeffs, mesh)
    return jax.tree_util.tree_unflatten(
        treedef, [from_matrices(y, x.shape, d).astype(x.dtype) for y, x, d in zip(done, leaves, leaf_dims)])


def scale_by_muon_low_precision(
    ns_dtype: DTypeLike, dims_fn, *, beta: float = 0.95, ns_steps: int = 5, eps: float = 1e-8, share: bool = False
) -> optax.GradientTransformation:
    """``optax.contrib.scale_by_muon`` (Nesterov, Frobenius preconditioning) with the
    Newton–Schulz iterations in ``ns_dtype`` and, with ``share``, divided over the devices of the
    mesh it is traced under (:func:`orthogonalize_tree`). The momentum is kept and updated in
    float32; the Nesterov momentum is cast to ``ns_dtype`` for the iterations (which start by
    normalising it) and the orthogonalised result back to float32."""
    inner = optax.contrib.scale_by_muon(ns_coeffs=_NS_COEFFS, ns_steps=ns_steps, beta=beta, eps=eps,
                                        weight_dimension_numbers=dims_fn)

    def update_fn(updates, state: MuonState, params=None):
        del params
        dims = dims_fn(updates)
        mu = optax.tree.update_moment(updates, state.mu, beta, 1)
        count_inc = optax.safe_increment(state.count)
        mu_hat = jax.tree_util.tree_map(
            lambda m, g: beta * m + (1 - beta) * g,
            optax.tree.bias_correction(mu, beta, optax.safe_increment(count_inc)),
            optax.tree.bias_correction(updates, beta, count_inc),
        )
        with scope("newton_schulz"):
            new = orthogonalize_tree(mu_hat, dims, state.ns_coeffs, ns_dtype=ns_dtype, ns_steps=ns_steps, eps=eps,
                                     share=share)
        return new, MuonState(count=count_inc, mu=mu, ns_coeffs=state.ns_coeffs)

    return optax.GradientTransformation(inner.init, update_fn)


def muon(
    learning_rate: float | optax.Schedule,
    dims_fn,
    *,
    adam_b1: float = 0.9,
    adam_b2: float = MUON_ADAM_B2,
    weight_decay: float = 0.0,
    ns_dtype: DTypeLike = jnp.float32,
    share_newton_schulz: bool = False,
) -> optax.GradientTransformation:
    """Muon with ``optax.contrib.muon``'s state tree and defaults; the Newton–Schulz iterations
    run in ``ns_dtype``, shared over the devices of the mesh the update is traced under with
    ``share_newton_schulz``. In float32 and unshared this returns ``optax.contrib.muon`` itself."""
    ns_dtype = jnp.dtype(ns_dtype)
    if ns_dtype == jnp.float32 and not share_newton_schulz:
        return optax.contrib.muon(learning_rate, weight_decay=weight_decay, adam_b1=adam_b1, adam_b2=adam_b2,
                                  adam_weight_decay=weight_decay, muon_weight_dimension_numbers=dims_fn)
    return muon_partition(learning_rate, dims_fn, adam_b1=adam_b1, adam_b2=adam_b2, weight_decay=weight_decay,
                          ns_dtype=ns_dtype, share_newton_schulz=share_newton_schulz)


def muon_partition(
    learning_rate: float | optax.Schedule,
    dims_fn,
    *,
    adam_b1: float,
    adam_b2: float,
    weight_decay: float,
    ns_dtype: DTypeLike,
    share_newton_schulz: bool = False,
) -> optax.GradientTransformation:
    """The partition ``optax.contrib.muon`` builds (Muon branch for the leaves ``dims_fn`` gives
    dimension numbers, Nesterov AdamW for the rest), with :func:`scale_by_muon_low_precision`."""
    def labels(params):
        return jax.tree_util.tree_map(
            lambda d, sub: jax.tree_util.tree_map(lambda _: "adam" if d is None else "muon", sub),
            dims_fn(params), params, is_leaf=_is_dims_leaf)

    def masked_dims(params):
        mask = jax.tree_util.tree_map(lambda label: label == "muon", labels(params))
        return jax.tree_util.tree_map(
            lambda d, sub: jax.tree_util.tree_map(lambda m: d if m else optax.MaskedNode(), sub),
            dims_fn(params), mask, is_leaf=_is_dims_leaf)

    return optax.partition(
        {
            "muon": optax.chain(
                scale_by_muon_low_precision(ns_dtype, masked_dims, share=share_newton_schulz),
                optax.contrib._muon.scale_by_shape(weight_dimension_numbers=masked_dims),
                optax.add_decayed_weights(weight_decay),
                optax.scale_by_learning_rate(learning_rate),
            ),
            "adam": optax.adamw(learning_rate, b1=adam_b1, b2=adam_b2, eps=1e-8, weight_decay=weight_decay,
                                nesterov=True),
        },
        labels,
    )


def make_optimizer(
    model: eqx.Module,
    learning_rate: float | optax.Schedule,
    *,
    name: Literal["muon", "adamw"] = "muon",
    b1: float = 0.9,
    b2: float | None = None,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    ns_dtype: ComputeDtype = "auto",
    platform: str | None = None,
    share_newton_schulz: bool = True,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` then Muon (AdamW ``b1``/``b2`` for its non-matrix leaves)
    or plain AdamW, at ``learning_rate`` (a float or an optax schedule).

    ``b2=None`` takes each optimizer's default: 0.999 on Muon's Adam side (optax's, as the
    reference), 0.95 for AdamW; ``b2=0.95`` with Muon is elf_eqx's former behaviour.
    ``ns_dtype`` names the precision policy whose ``newton_schulz`` row Muon's iterations run by
    (``auto``: bf16 on GPU/TPU, float32 on CPU; the run's ``compute_dtype``), resolved for ``platform`` (the network's :attr:`~elf_eqx.config.ELFConfig.platform`:
    a dry run's target; ``None``: this machine's), as the network's own compute dtype is.
    ``share_newton_schulz`` divides Muon's Newton–Schulz work over the devices of the mesh the
    update is traced under (:func:`orthogonalize_tree`); it changes nothing on one device.
    """
    if name == "muon":
        core = muon(learning_rate, muon_dimension_numbers, adam_b1=b1,
                    adam_b2=MUON_ADAM_B2 if b2 is None else b2, weight_decay=weight_decay,
                    ns_dtype=precision_policy(ns_dtype, backend_of(platform)).newton_schulz.matmul,
                    share_newton_schulz=share_newton_schulz)
    elif name == "adamw":
        core = optax.adamw(learning_rate, b1=b1, b2=ADAMW_B2 if b2 is None else b2, weight_decay=weight_decay)
    else:
        raise ConfigError(f"unknown optimizer {name!r} (muon, adamw)")
    return optax.chain(optax.clip_by_global_norm(clip_norm), core) if clip_norm else core
