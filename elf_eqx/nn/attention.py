"""Multi-head self-attention with QK-norm and RoPE, as in the ELF blocks.

The attention core runs one of two ways (chosen by :func:`choose_attention`): the explicit
einsum math (``xla``: float32 scores and softmax, dropout on the probabilities possible), or
cuDNN's fused flash attention through ``jax.nn.dot_product_attention(implementation="cudnn")``,
which never materialises the ``(B, heads, N, N)`` scores (docs/method.md#network). The choice
follows from the layer's own static fields: its ``implementation``, and its attention-probability
:class:`~elf_eqx.nn.dropout.Dropout`, which the fused kernel cannot apply.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from elf_eqx.errors import ConfigError
from elf_eqx.nn.dropout import Dropout
from elf_eqx.nn.linear import Linear
from elf_eqx.nn.norm import RMSNorm
from elf_eqx.nn.rope import apply_rope
from elf_eqx.parallel.rows import sharded_rows, traced_row_axes
from elf_eqx.precision import PrecisionPolicy, matmul, policy_of, scope

# cuDNN flash attention takes bf16/fp16 operands and a head dimension that is a multiple of 8,
# at most 128 on every NVIDIA GPU (256 from Hopper on); we pad smaller odd sizes up to it.
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_CUDNN_MAX_HEAD_DIM = 128
ATTENTION_KINDS = ("auto", "xla", "cudnn", "pallas")
"""The ``attention`` settings: ``auto`` resolves per platform (:func:`choose_attention`)."""
_FUSED = {"cuda": "cudnn", "tpu": "pallas"}
"""The fused kernel ``auto`` picks on each platform."""
# The Pallas TPU kernel works on blocks of query and key positions; the sequence (ELF: the 12
# prefix tokens and the text) is padded up to a multiple of the block, the padding in a segment
# of its own that no real position attends to.
PALLAS_BLOCK = 128


def cudnn_head_dim(head_dim: int) -> int:
    """``head_dim`` rounded up to the multiple of 8 that cuDNN's flash attention takes."""
    return -(-head_dim // 8) * 8


def accelerator_platform() -> str:
    """``cuda``, ``rocm``, ``tpu``, ``cpu``...: the platform of the default backend's devices."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version or "hip" in version else "cuda"


@functools.lru_cache(maxsize=None)
def _say_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _kernel_problems(kernel: str, platform: str, dtype: jnp.dtype, head_dim: int) -> list[str]:
    """Why the fused ``kernel`` (``cudnn``, ``pallas``) cannot run here (empty: it can)."""
    problems = []
    if kernel == "cudnn":
        if platform != "cuda":
            problems.append(f"the backend is {platform}, not an NVIDIA GPU")
        if dtype not in _CUDNN_DTYPES:
            problems.append(f"activations are {dtype.name}, not bfloat16/float16 (set compute_dtype)")
        if cudnn_head_dim(head_dim) > _CUDNN_MAX_HEAD_DIM:
            problems.append(f"head dimension {head_dim} exceeds {_CUDNN_MAX_HEAD_DIM}")
    elif platform != "tpu":
        problems.append(f"the backend is {platform}, not a TPU")
    return problems


def choose_attention(
    requested: str, platform: str, dtype: DTypeLike, head_dim: int, dropout_active: bool = False
) -> str:
    """``"cudnn"``, ``"pallas"`` or ``"xla"``: the attention core to run.

    ``requested`` is the config's ``attention`` (``auto``, ``xla``, ``cudnn``, ``pallas``);
    ``platform`` as :func:`accelerator_platform` names it; ``dtype`` the activation dtype. ``auto``
    picks cuDNN's fused kernel on an NVIDIA GPU (``cuda``) with bf16/fp16 activations and a head
    dimension cuDNN can take (after padding to a multiple of 8), the Pallas flash-attention kernel
    on a TPU, and the explicit XLA math elsewhere; ``cudnn``/``pallas`` raise where their kernel
    cannot run. Dropout on attention probabilities cannot run inside a fused kernel: with
    ``dropout_active`` the explicit path is used, and the first time this happens a warning says so.
    """
    if requested not in ATTENTION_KINDS:
        raise ConfigError(f"attention must be one of {list(ATTENTION_KINDS)}, got {requested!r}")
    if requested == "xla":
        return "xla"
    kernel = _FUSED.get(platform, "cudnn") if requested == "auto" else requested
    problems = _kernel_problems(kernel, platform, jnp.dtype(dtype), head_dim)
    if problems:
        if requested != "auto":
            raise ConfigError(f"attention={requested!r} cannot run: " + "; ".join(problems))
        return "xla"
    if dropout_active:
        _say_once(f"attention={requested!r}: attn_dropout > 0 needs dropout on the attention probabilities, "
                  f"which the fused {kernel} kernel cannot do; training blocks use the explicit XLA attention")
        return "xla"
    return kernel


def explicit_attention(
    q: Float[Array, "B N heads D"],
    k: Float[Array, "B N heads D"],
    v: Float[Array, "B N heads D"],
    scale: float,
    causal: bool = False,
    probs_dropout: Callable[[Float[Array, "B heads N N"]], Float[Array, "B heads N N"]] | None = None,
    precision: PrecisionPolicy | None = None,
) -> Float[Array, "B N heads D"]:
    """``softmax(scale·q·kᵀ)·v`` with the scores and the softmax as ``precision`` says (every
    policy: float32; default: the policy of ``v``'s dtype); ``causal`` lets query ``i`` see keys
    ``≤ i`` only; ``probs_dropout`` (if given) is applied to the float32 probabilities. Output in
    the dtype of ``v``."""
    p = precision if precision is not None else policy_of(v)
    with scope("attention_scores"):
        logits = matmul(_SCORES, q, k, p.attention_scores) * scale
    with scope("softmax"):
        logits = logits.astype(p.softmax.elementwise)
        if causal:
            n = q.shape[1]
            logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -jnp.inf)
        probs = jax.nn.softmax(logits, axis=-1)
        if probs_dropout is not None:
            probs = probs_dropout(probs)
        return matmul(_MIX, probs, v, p.softmax).astype(v.dtype)


_SCORES = functools.partial(jnp.einsum, "bqhd,bkhd->bhqk")
_MIX = functools.partial(jnp.einsum, "bhqk,bkhd->bqhd")


def fused_attention(
    q: Float[Array, "B N heads D"],
    k: Float[Array, "B N heads D"],
    v: Float[Array, "B N heads D"],
    scale: float,
    implementation: str = "cudnn",
    causal: bool = False,
) -> Float[Array, "B N heads D"]:
    """``softmax(scale·q·kᵀ)·v`` through ``jax.nn.dot_product_attention`` (``causal``: query ``i``
    sees keys ``≤ i``). The head dimension is zero-padded to a multiple of 8 (cuDNN's requirement):
    zeros add nothing to ``q·k`` and the padded output columns are dropped."""
    head_dim = q.shape[-1]
    padded = cudnn_head_dim(head_dim)
    if padded != head_dim:
        pad = ((0, 0), (0, 0), (0, 0), (0, padded - head_dim))
        q, k, v = (jnp.pad(a, pad) for a in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, implementation=implementation)
    return out[..., :head_dim]


def pallas_attention(
    q: Float[Array, "B N heads D"],
    k: Float[Array, "B N heads D"],
    v: Float[Array, "B N heads D"],
    scale: float,
    causal: bool = False,
    block: int = PALLAS_BLOCK,
) -> Float[Array, "B N heads D"]:
    """``softmax(scale·q·kᵀ)·v`` through JAX's Pallas flash-attention kernel for TPUs (forward and
    backward kernels; float32 softmax statistics; the ``(N, N)`` scores never reach HBM). The
    positions are padded up to a multiple of ``block``; the padding is a segment of its own, so no
    real position attends to it, and its rows are dropped. Output in the dtype of ``v``.

    XLA cannot partition a kernel it did not write: under a device mesh (the abstract mesh the
    train step and the sampler are traced under) each device runs the kernel on its own rows
    (``shard_map`` over the mesh's batch axes)."""
    kernel = functools.partial(_pallas_kernel, scale=scale, causal=causal, block=block)
    rows = traced_row_axes()
    if not rows:
        return kernel(q, k, v)
    spec = PartitionSpec(rows)
    b = q.shape[0]
    q, k, v = (sharded_rows(a) for a in (q, k, v))  # rows the devices do not divide: padded, dropped below
    out = jax.shard_map(kernel, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec, spec, spec), out_specs=spec,
                        check_vma=False)(q, k, v)
    return out[:b]


def _pallas_kernel(q, k, v, *, scale: float, causal: bool, block: int):
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    b, n, _, _ = q.shape
    padded = -(-n // block) * block
    q, k, v = (jnp.pad(a, ((0, 0), (0, padded - n), (0, 0), (0, 0))).transpose(0, 2, 1, 3) for a in (q, k, v))
    segments = None
    if padded != n:
        ids = jnp.broadcast_to((jnp.arange(padded) < n).astype(jnp.int32), (b, padded))
        segments = tpu_flash.SegmentIds(ids, ids)
    sizes = tpu_flash.BlockSizes(
        block_q=block, block_k_major=block, block_k=block, block_b=1, block_q_major_dkv=block,
        block_k_major_dkv=block, block_k_dkv=block, block_q_dkv=block, block_k_major_dq=block, block_k_dq=block,
        block_q_dq=block)
    out = tpu_flash.flash_attention(q, k, v, segment_ids=segments, causal=causal, sm_scale=scale, block_sizes=sizes)
    return out.transpose(0, 2, 1, 3)[:, :n].astype(v.dtype)


class SelfAttention(eqx.Module):
    """Fused ``qkv`` projection, per-head RMSNorm on q and k, RoPE, float32 softmax, output projection.

    No padding mask: ELF attends to every position, padding included (docs/method.md#network);
    a layer built ``causal`` (the AR baseline) lets each position see only itself and those
    before it. ``implementation`` is the config's ``attention`` field (``auto``, ``xla``,
    ``cudnn``); ``attn_dropout`` the dropout on the attention probabilities, which keeps the
    layer on the explicit path whenever it is live and a key is given.
    """

    qkv: Linear
    proj: Linear
    q_norm: RMSNorm
    k_norm: RMSNorm
    attn_dropout: Dropout
    num_heads: int = eqx.field(static=True)
    implementation: str = eqx.field(static=True, default="auto")
    causal: bool = eqx.field(static=True, default=False)
    platform: str | None = eqx.field(static=True, default=None)

    def __init__(
        self, hidden_size: int, num_heads: int, *, eps: float = 1e-6, implementation: str = "auto",
        attn_dropout: float = 0.0, causal: bool = False, platform: str | None = None, key: PRNGKeyArray,
    ):
        k1, k2 = jax.random.split(key)
        head_dim = hidden_size // num_heads
        # qkv's columns are [q | k | v], each heads × head_dim; proj's rows are the heads' outputs.
        self.qkv = Linear(hidden_size, 3 * hidden_size, key=k1, in_axis="embed", out_axis="qkv")
        self.proj = Linear(hidden_size, hidden_size, key=k2, in_axis="heads", out_axis="embed")
        self.q_norm = RMSNorm(head_dim, eps, axis="head_dim")
        self.k_norm = RMSNorm(head_dim, eps, axis="head_dim")
        self.attn_dropout = Dropout(attn_dropout)
        self.num_heads = num_heads
        self.implementation = implementation
        self.causal = causal
        self.platform = platform

    def __call__(
        self,
        x: Float[Array, "B N H"],
        cos: Float[Array, "N half"],
        sin: Float[Array, "N half"],
        *,
        key: PRNGKeyArray | None = None,
        dropout_scale: Float[Array, ""] | float = 1.0,
        precision: PrecisionPolicy | None = None,
    ) -> Float[Array, "B N H"]:
        """``(B, N, H) -> (B, N, H)`` in the dtype of ``x``; ``cos``/``sin`` are the RoPE tables of
        :func:`rope_angles`. ``key`` enables the attention-probability dropout, at its rate times
        ``dropout_scale`` (traced: the band of the scanned blocks). ``precision``: the policy
        (default: the one of ``x``'s dtype)."""
        p = precision if precision is not None else policy_of(x)
        b, n, h = x.shape
        head_dim = h // self.num_heads
        with scope("projections"):
            qkv = self.qkv(x, p.projections).reshape(b, n, 3, self.num_heads, head_dim)
        q = apply_rope(self.q_norm(qkv[:, :, 0]), cos, sin, p.rope)
        k = apply_rope(self.k_norm(qkv[:, :, 1]), cos, sin, p.rope)
        v = qkv[:, :, 2]
        scale = head_dim**-0.5
        dropping = self.attn_dropout.live and key is not None
        platform = self.platform or accelerator_platform()  # the target's, when compiling for one
        impl = choose_attention(self.implementation, platform, x.dtype, head_dim, dropping)
        if impl == "cudnn":
            out = fused_attention(q, k, v, scale, causal=self.causal)
        elif impl == "pallas":
            out = pallas_attention(q, k, v, scale, causal=self.causal)
        else:
            probs_dropout = (lambda a: self.attn_dropout(a, key=key, scale=dropout_scale)) if dropping else None
            out = explicit_attention(q, k, v, scale, self.causal, probs_dropout, p)
        with scope("projections"):
            return self.proj(out.reshape(b, n, h), p.projections)
