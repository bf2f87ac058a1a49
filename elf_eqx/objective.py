"""The ELF training objective: denoising flow matching plus the decode branch (docs/method.md#objective).

One call returns the scalar loss to minimise and its parts. How a step divides between the
denoise and decode branches is :attr:`FlowObjective.branch`:

* ``"split"`` (default): every batch is split in fixed proportion — ``round(p·b)`` samples of
  each of ``branch_groups`` equal groups go to the decode branch, the rest to the denoise
  branch — and the loss is ``p·L_decode + (1 − p)·L_denoise``. It has the same expectation as
  the reference's per-device coin flip, lower variance, no wasted compute, and it gives the
  same numbers on any device mesh.
* ``"per_step"``: one Bernoulli(p) per step picks a branch for the whole batch (what the
  reference does on a single device).

Which denoise samples are self-conditioned is :attr:`FlowObjective.self_cond_draw`:

* ``"per_sample"`` (default, the reference): a Bernoulli(``self_cond_prob``) per sample; the
  no-gradient first pass runs on every sample.
* ``"split"``: exactly ``round(q·n)`` samples of each of ``branch_groups`` groups (the first ones of
  the group; rows are shuffled by the data loader) are self-conditioned, and the first pass runs on
  those only: the rest never use it. The same expectation, less compute (a quarter of the denoise
  branch's forward passes at ``q = 0.5``), and like ``split`` the same numbers on any mesh.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Shaped

from elf_eqx.errors import ConfigError
from elf_eqx.fields import static_choice
from elf_eqx.flow import FLOW, FlowConstants, TimeSchedule, interpolate, keep_condition, sample_logit_normal, sample_sc_cfg_scale, sample_time, velocity
from elf_eqx.model import ELF

Branch = Literal["split", "per_step"]
SelfCondDraw = Literal["per_sample", "split"]
if TYPE_CHECKING:
    _Schedule, _Branch, _Draw = TimeSchedule, Branch, SelfCondDraw
else:  # at run time a bad choice fails in FlowObjective.check, a ConfigError naming the field
    _Schedule = _Branch = _Draw = str


class LatentBatch(eqx.Module):
    """A training batch after the frozen encoder.

    ``x`` are normalised clean latents; ``tokens`` the ids they came from; ``loss_mask`` the
    positions that are scored (pad mode: valid target tokens; eos mode: all target positions);
    ``cond_mask`` the condition positions; ``drop_cond`` the samples whose condition is dropped
    (classifier-free guidance), whose condition positions are zeroed in ``x`` and ``z``.
    """

    x: Float[Array, "B L D"]
    tokens: Int[Array, "B L"]
    loss_mask: Bool[Array, "B L"]
    cond_mask: Bool[Array, "B L"]
    drop_cond: Bool[Array, " B"]

    @staticmethod
    def unconditional(x: Float[Array, "B L D"], tokens: Int[Array, "B L"], loss_mask: Bool[Array, "B L"]) -> "LatentBatch":
        """A batch with no condition tokens."""
        b, length = tokens.shape
        return LatentBatch(x, tokens, loss_mask, jnp.zeros((b, length), bool), jnp.zeros((b,), bool))

    def rows(self, start: int, stop: int, groups: int = 1) -> "LatentBatch":
        """Samples ``start:stop`` of each of ``groups`` equal groups, group by group (see
        :func:`group_rows`)."""
        return jax.tree_util.tree_map(lambda a: group_rows(a, start, stop, groups), self)


def group_rows(a: Shaped[Array, "B ..."], start: int, stop: int, groups: int = 1) -> Shaped[Array, "n ..."]:
    """Rows ``start:stop`` of each of ``groups`` equal groups of ``a``'s leading axis, group by
    group: ``(groups·(stop − start), ...)``. Static slices, not a gather: on a batch sharded over
    devices the partitioner moves only the rows that change device, where a gather of computed
    indices made it replicate the rows (6.5× the FLOPs per device of a 32-chip ELF-B step)."""
    per_group = a.shape[0] // groups
    grouped = a.reshape(groups, per_group, *a.shape[1:])[:, start:stop]
    return grouped.reshape(groups * (stop - start), *a.shape[1:])


def group_concat(head: Shaped[Array, "n ..."], tail: Shaped[Array, "m ..."], groups: int = 1) -> Shaped[Array, "B ..."]:
    """The inverse of two :func:`group_rows` calls: each group's rows of ``head`` then its rows of
    ``tail``, group by group."""
    h = head.reshape(groups, head.shape[0] // groups, *head.shape[1:])
    t = tail.reshape(groups, tail.shape[0] // groups, *tail.shape[1:])
    return jnp.concatenate([h, t], axis=1).reshape(head.shape[0] + tail.shape[0], *head.shape[1:])


def decode_rows(share: float, rows: int) -> int:
    """How many of ``rows`` samples go to the decode branch at ``share``: none at 0, all at 1, else
    ``round(share·rows)`` kept within ``[1, rows − 1]`` so both branches get a sample (none at all
    when ``rows`` is 1). The one split of a batch between the branches: ELF's training
    (:meth:`FlowObjective.split_sizes`, per group), the distillation's decode share and their FLOP counts."""
    if share in (0.0, 1.0):
        return int(share) * rows
    return min(max(round(share * rows), 1), rows - 1)


def masked_mean(values: Float[Array, "B L"], mask: Bool[Array, "B L"]) -> Float[Array, ""]:
    """Mean of ``values`` over the positions where ``mask`` holds (0 if none do)."""
    m = mask.astype(jnp.float32)
    return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


class FlowObjective(eqx.Module):
    """Hyperparameters of the ELF loss and the flow constants it trains with; call it as
    ``objective(model, batch, key)``. Each hyperparameter is declared here once: the training
    config's objective section takes its flags from these fields (all but ``flow``, which it
    holds as its own fields, and ``branch_groups``, which the mesh sets)."""

    flow: FlowConstants = eqx.field(static=True, default=FLOW)
    time_schedule: _Schedule = static_choice(TimeSchedule, "logit_normal")
    """Distribution of training times t."""
    decoder_noise_scale: float = 5.0
    """s_dec of the decode branch's corruption λ·x + (1 − λ)·s_dec·ε."""
    decoder_prob: float = eqx.field(static=True, default=0.2)
    """Share of the decode branch."""
    decoder_lambda_mean: float = 0.8
    """Mean of the logit-normal λ of the decode branch's corruption (per token)."""
    decoder_lambda_std: float = 0.8
    """Std of the logit-normal λ of the decode branch's corruption."""
    self_cond_prob: float = 0.5
    """Probability that a sample is self-conditioned."""
    omega_min: float = 0.5
    """SC-CFG scale range: 1 + ω is log-uniform on [1 + omega_min, 1 + omega_max]."""
    omega_max: float = 5.0
    """Upper end of the SC-CFG scale range."""
    branch: _Branch = static_choice(Branch, "split")
    """How steps divide between the denoise and decode branches (see elf_eqx.objective)."""
    branch_groups: int = eqx.field(static=True, default=1)
    """Equal groups of the batch that each hold both branches' shares (the data-parallel shards)."""
    self_cond_draw: _Draw = static_choice(SelfCondDraw, "per_sample")
    """Which denoise samples are self-conditioned: per_sample (a coin each, the reference) or split
    (exactly self_cond_prob of them, the no-gradient first pass on those only: less compute)."""

    def __check_init__(self):
        self.check({name: getattr(self, name) for name in self.settings() + ("branch_groups",)},
                   lambda name: f"FlowObjective.{name}")

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The hyperparameters a training config sets (every field but ``flow`` and ``branch_groups``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("flow", "branch_groups"))

    @staticmethod
    def check(values: Mapping[str, Any], flag: Callable[[str], str]) -> None:
        """Raise :class:`~elf_eqx.errors.ConfigError` naming (``flag(name)``) the first bad
        hyperparameter of ``values``; missing names are not checked."""
        for name, kind in (("time_schedule", TimeSchedule), ("branch", Branch), ("self_cond_draw", SelfCondDraw)):
            if name in values and values[name] not in typing.get_args(kind):
                raise ConfigError(f"{flag(name)} must be one of {list(typing.get_args(kind))}, got {values[name]!r}")
        for name in ("decoder_prob", "self_cond_prob"):
            if name in values and not 0.0 <= values[name] <= 1.0:
                raise ConfigError(f"{flag(name)} must be in [0, 1], got {values[name]}")
        if values.get("branch_groups", 1) < 1:
            raise ConfigError(f"{flag('branch_groups')} must be >= 1, got {values['branch_groups']}")

    # -- the two branches -------------------------------------------------------------------

    def denoise_loss(
        self, model: ELF, batch: LatentBatch, key: PRNGKeyArray, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """Self-conditioned, SC-CFG-guided x-prediction flow-matching loss (mean squared velocity error)."""
        k_t, k_eps, k_omega, k_sc = jax.random.split(key, 4)
        b = batch.x.shape[0]
        cond = batch.cond_mask
        t = sample_time(k_t, b, self.time_schedule, self.flow.p_mean, self.flow.p_std)
        omega = sample_sc_cfg_scale(k_omega, b, self.omega_min, self.omega_max)
        z = keep_condition(interpolate(batch.x, jax.random.normal(k_eps, batch.x.shape), t, self.flow.noise_scale), batch.x, cond)
        sc_zero = keep_condition(jnp.zeros_like(batch.x), batch.x, cond)

        # Unguided first pass (zeros as x̂_prev), no gradient, no dropout.
        if self.self_cond_draw == "split":  # on the self-conditioned samples only
            g, n_sc = self._sc_split(b)
            use_sc = group_concat(jnp.ones((g * n_sc,), bool), jnp.zeros((b - g * n_sc,), bool), g)
            x_uncond = sc_zero
            if n_sc:
                first = model(*(group_rows(a, 0, n_sc, g) for a in (jnp.concatenate([z, sc_zero], -1), t, omega)))
                x_uncond = group_concat(jax.lax.stop_gradient(first), group_rows(sc_zero, n_sc, b // g, g), g)
        else:
            x_uncond = jax.lax.stop_gradient(model(jnp.concatenate([z, sc_zero], -1), t, omega))
            use_sc = jax.random.bernoulli(k_sc, self.self_cond_prob, (b,))
        x_uncond = keep_condition(x_uncond, batch.x, cond)
        sc_input = jnp.where(use_sc[:, None, None], x_uncond, sc_zero)
        x_pred = model(jnp.concatenate([z, sc_input], -1), t, omega, key=dropout_key)

        v_pred = velocity(x_pred, z, t, self.flow.t_eps)
        v_target = velocity(batch.x, z, t, self.flow.t_eps)
        # SC-CFG target for the self-conditioned samples: v + (1 − 1/ω)(v_c − v_u).
        v_u = velocity(x_uncond, z, t, self.flow.t_eps)
        if dropout_key is None:
            # Without dropout the guided pass net([z, x̂_u]) *is* the trainable pass on these samples.
            x_cond = jax.lax.stop_gradient(x_pred)
        else:
            x_cond = jax.lax.stop_gradient(model(jnp.concatenate([z, x_uncond], -1), t, omega))
        v_c = velocity(x_cond, z, t, self.flow.t_eps)
        guidance = (1.0 - 1.0 / omega)[:, None, None] * (v_c - v_u)
        v_target = v_target + jnp.where(use_sc[:, None, None], guidance, 0.0)
        per_token = jnp.mean(jnp.square(v_pred - jax.lax.stop_gradient(v_target)), axis=-1)
        return masked_mean(per_token, batch.loss_mask & ~cond)

    def _sc_split(self, b: int) -> tuple[int, int]:
        """``(groups, self-conditioned samples per group)`` for ``self_cond_draw="split"``: the
        first ``round(q·n)`` of each of ``branch_groups`` groups of ``n``."""
        g = self.branch_groups if b % self.branch_groups == 0 else 1
        return g, round(self.self_cond_prob * (b // g))

    def decode_inputs(
        self, batch: LatentBatch, key: PRNGKeyArray
    ) -> tuple[Float[Array, "B L F"], Float[Array, " B"]]:
        """The decode branch's input ``[λ·x + (1 − λ)·s_dec·ε, 0]`` (``λ ~ sigmoid(N(0.8, 0.8))`` per
        token) and its SC-CFG scales ω."""
        k_lam, k_eps, k_omega = jax.random.split(key, 3)
        b, length, _ = batch.x.shape
        lam = sample_logit_normal(k_lam, (b, length, 1), self.decoder_lambda_mean, self.decoder_lambda_std)
        noise = jax.random.normal(k_eps, batch.x.shape)
        z = lam * batch.x + (1.0 - lam) * self.decoder_noise_scale * noise
        omega = sample_sc_cfg_scale(k_omega, b, self.omega_min, self.omega_max)
        return jnp.concatenate([z, jnp.zeros_like(z)], -1), omega

    def decode_loss(
        self, model: ELF, batch: LatentBatch, key: PRNGKeyArray, dropout_key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """Cross-entropy of decode-mode logits for latents corrupted per token with ``λ ~ sigmoid(N(0.8, 0.8))``."""
        z_in, omega = self.decode_inputs(batch, key)
        logits = model.decode(z_in, omega, key=dropout_key)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.tokens)
        return masked_mean(ce, batch.loss_mask & ~batch.cond_mask)

    # -- the whole loss ---------------------------------------------------------------------

    def split_sizes(self, batch_size: int) -> tuple[int, int]:
        """``(groups, decode samples per group)`` for the ``split`` branch mode."""
        g = self.branch_groups
        if batch_size % g:
            raise ConfigError(f"batch size {batch_size} is not divisible by FlowObjective.branch_groups={g}")
        per_group = batch_size // g
        if per_group < 2 and self.decoder_prob not in (0.0, 1.0):
            raise ConfigError(
                f"branch='split' needs at least 2 samples per group to hold both branches "
                f"(batch {batch_size}, branch_groups {g}); use branch='per_step' or a larger batch"
            )
        return g, decode_rows(self.decoder_prob, per_group)

    def __call__(
        self, model: ELF, batch: LatentBatch, key: PRNGKeyArray, *, dropout: bool = True
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """``(loss, {"l2", "ce", "decode_frac"})`` for one batch. ``dropout`` enables the model's dropout."""
        # Label drop: zero the condition latents of the dropped samples (the encoder mask was built with it).
        x = jnp.where((batch.drop_cond[:, None] & batch.cond_mask)[..., None], 0.0, batch.x)
        batch = eqx.tree_at(lambda bt: bt.x, batch, x)
        k_branch, k_den, k_dec, k_drop = jax.random.split(key, 4)
        use_dropout = dropout and (model.config.attn_dropout > 0 or model.config.proj_dropout > 0)
        kd_den, kd_dec = jax.random.split(k_drop) if use_dropout else (None, None)
        p = self.decoder_prob

        if self.branch == "per_step":
            is_decode = jax.random.bernoulli(k_branch, p)
            l2 = jax.lax.cond(is_decode, lambda: jnp.float32(0.0), lambda: self.denoise_loss(model, batch, k_den, kd_den))
            ce = jax.lax.cond(is_decode, lambda: self.decode_loss(model, batch, k_dec, kd_dec), lambda: jnp.float32(0.0))
            loss = jnp.where(is_decode, ce, l2)
            return loss, {"l2": l2, "ce": ce, "decode_frac": is_decode.astype(jnp.float32)}

        b = batch.x.shape[0]
        groups, n_dec = self.split_sizes(b)
        per_group = b // groups
        # The first n_dec samples of each group decode, the rest denoise.
        l2 = (self.denoise_loss(model, batch.rows(n_dec, per_group, groups), k_den, kd_den)
              if n_dec < per_group else jnp.float32(0.0))
        ce = self.decode_loss(model, batch.rows(0, n_dec, groups), k_dec, kd_dec) if n_dec > 0 else jnp.float32(0.0)
        loss = p * ce + (1.0 - p) * l2
        return loss, {"l2": l2, "ce": ce, "decode_frac": jnp.float32(n_dec / per_group)}
