"""ELF samplers over a time grid: Euler (the reference), Heun and a DPM-Solver++(2M)-style multistep
solver, each as an ODE or with churn (the reference's or a marginal-preserving one), with
self-conditioning, SC-CFG and classifier-free guidance, then one decode pass to tokens
(docs/method.md#sampling).

The integration takes any x-prediction function (:meth:`Sampler.solve`), so the same solvers run a
toy with an exact denoiser (``benchmarks/toy_sampler.py``). The loop is a ``lax.scan``; wrap a call
in ``jax.jit``/``eqx.filter_jit`` to compile it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from elf_eqx.flow import FLOW, keep_condition, logit_normal_quantiles, power_spacing, sample_logit_normal, velocity
from elf_eqx.model import ELF

SamplerMethod = Literal["ode", "sde"]
Solver = Literal["euler", "heun", "dpm2m"]
SdeNoise = Literal["reference", "consistent"]
TimeGrid = Literal["logit_normal", "logit_normal_quantile", "uniform", "power"]
if TYPE_CHECKING:
    _Method, _Solver, _Noise, _Grid = SamplerMethod, Solver, SdeNoise, TimeGrid
else:  # at run time a bad choice fails in __check_init__, a ValueError naming the field
    _Method = _Solver = _Noise = _Grid = str

Predict = Callable[[Float[Array, "B L D"], Float[Array, "B L D"], Float[Array, ""]], Float[Array, "B L D"]]
"""``predict(z, x_prev, t) -> x̂``: the (guided) clean-latent estimate at time ``t`` given the
self-conditioning input ``x_prev``."""


def clipped_log_time(t: Float[Array, "*S"], t_eps: float) -> Float[Array, "*S"]:
    """``Λ(t) = ∫₀ᵗ dτ / max(1 − τ, t_eps)``: ``−log(1 − t)`` up to ``1 − t_eps``, then linear with
    slope ``1/t_eps``. In ``Λ`` the sampling ODE is ``dz/dΛ = x̂ − z`` (docs/method.md#solvers)."""
    knee = 1.0 - t_eps
    return jnp.where(t <= knee, -jnp.log1p(-jnp.minimum(t, knee)), -jnp.log(t_eps) + (t - knee) / t_eps)


class Condition(eqx.Module):
    """Clean condition latents and where they sit (conditional tasks). Condition positions stay
    clean throughout sampling."""

    x: Float[Array, "B L D"]
    mask: Bool[Array, "B L"]

    @staticmethod
    def none(batch: int, length: int, dim: int) -> "Condition":
        """No condition tokens (unconditional generation)."""
        return Condition(jnp.zeros((batch, length, dim), jnp.float32), jnp.zeros((batch, length), bool))


class SampleOutput(eqx.Module):
    """Final latents ``z₁`` and decoded token ids (after EOS masking when an EOS id is given)."""

    latents: Float[Array, "B L D"]
    tokens: Int[Array, "B L"]


def mask_after_eos(
    tokens: Int[Array, "B L"], eos_id: int, pad_id: int, target_mask: Bool[Array, "B L"] | None = None
) -> Int[Array, "B L"]:
    """Replace everything from the first EOS on (among ``target_mask`` positions) with ``pad_id``."""
    is_target = jnp.ones(tokens.shape, bool) if target_mask is None else target_mask
    seen_eos = jnp.cumsum((tokens == eos_id) & is_target, axis=-1) > 0
    return jnp.where(seen_eos & is_target, pad_id, tokens)


class Sampler(eqx.Module):
    """Sampling settings. ``method`` is ``ode`` or ``sde`` (churn ``gamma``, fresh noise sized as
    ``sde_noise`` says); ``solver`` integrates each interval: ``euler`` (the reference), ``heun``
    (2 evaluations) or ``dpm2m`` (1 evaluation, reusing the previous x̂). The last interval is
    always an Euler ODE step. ``omega`` is the SC-CFG scale fed to the network; ``cfg_weight`` ≠ 1
    adds a second, condition-free pass (conditional tasks). ``grid_seed`` fixes a random grid for
    every call. Users choose these through :class:`elf_eqx.sampling.settings.SamplerSettings`
    (``settings.sampler(flow)``); the flow constants must be those the model was trained with."""

    num_steps: int = eqx.field(static=True, default=32)
    method: _Method = eqx.field(static=True, default="sde")
    gamma: float = 1.5
    omega: float = 3.0
    cfg_weight: float = eqx.field(static=True, default=1.0)
    time_grid: _Grid = eqx.field(static=True, default="logit_normal")
    p_mean: float = FLOW.p_mean
    p_std: float = FLOW.p_std
    noise_scale: float = FLOW.noise_scale
    t_eps: float = FLOW.t_eps
    self_condition: bool = eqx.field(static=True, default=True)
    solver: _Solver = eqx.field(static=True, default="euler")
    sde_noise: _Noise = eqx.field(static=True, default="reference")
    grid_exponent: float = eqx.field(static=True, default=2.0)
    grid_seed: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"Sampler.num_steps must be >= 1, got {self.num_steps}")
        if self.method not in ("ode", "sde"):
            raise ValueError(f"Sampler.method must be 'ode' or 'sde', got {self.method!r}")
        for name, choices in (("solver", Solver), ("sde_noise", SdeNoise), ("time_grid", TimeGrid)):
            if getattr(self, name) not in choices.__args__:
                raise ValueError(f"Sampler.{name} must be one of {list(choices.__args__)}, got {getattr(self, name)!r}")
        if not self.grid_exponent > 0:
            raise ValueError(f"Sampler.grid_exponent must be positive, got {self.grid_exponent}")

    def nfe(self) -> int:
        """Network evaluations per sample in the integration: ``num_steps`` for Euler and DPM2M,
        ``2·num_steps − 1`` for Heun (its last step is Euler), doubled when ``cfg_weight`` ≠ 1.
        The final decode pass (one more, for every sampler) is not counted."""
        passes = 2 * self.num_steps - 1 if self.solver == "heun" else self.num_steps
        return passes * (2 if self.cfg_weight != 1.0 else 1)

    def grid(self, key: PRNGKeyArray) -> Float[Array, " n_plus_1"]:
        """Times ``0 = t_0 < … < t_n = 1`` (docs/method.md#time-grids): ``logit_normal`` (0, sorted
        logit-normal draws from ``key``, or from ``key(grid_seed)`` when set, 1),
        ``logit_normal_quantile``, ``uniform`` or ``power`` (``(i/n)^grid_exponent``)."""
        n = self.num_steps
        if self.time_grid == "uniform":
            return jnp.linspace(0.0, 1.0, n + 1, dtype=jnp.float32)
        if self.time_grid == "power":
            return power_spacing(n, self.grid_exponent)
        if self.time_grid == "logit_normal_quantile":
            inner = logit_normal_quantiles(n, self.p_mean, self.p_std)
        else:
            if self.grid_seed is not None:
                key = jax.random.key(self.grid_seed)
            inner = jnp.sort(sample_logit_normal(key, (n - 1,), self.p_mean, self.p_std))
        return jnp.concatenate([jnp.zeros(1), inner, jnp.ones(1)]).astype(jnp.float32)

    def predict(
        self,
        model: ELF,
        z: Float[Array, "B L D"],
        x_prev: Float[Array, "B L D"],
        t: Float[Array, ""],
        cond: Condition,
    ) -> Float[Array, "B L D"]:
        """Guided x̂ at time ``t``: one self-conditioned pass with SC-CFG ω, plus a condition-free
        pass mixed as ``x̂_u + w(x̂_c − x̂_u)`` when ``cfg_weight`` ≠ 1."""
        b = z.shape[0]
        inputs = jnp.concatenate([z, keep_condition(x_prev, cond.x, cond.mask)], -1)
        if self.cfg_weight == 1.0:
            return model(inputs, jnp.full((b,), t), jnp.full((b,), self.omega))
        uncond = jnp.where(cond.mask[..., None], 0.0, inputs)
        both = model(jnp.concatenate([inputs, uncond], 0), jnp.full((2 * b,), t), jnp.full((2 * b,), self.omega))
        x_c, x_u = both[:b], both[b:]
        return x_u + self.cfg_weight * (x_c - x_u)

    def churn(
        self, z: Float[Array, "B L D"], t: Float[Array, ""], t_next: Float[Array, ""], gamma: Float[Array, ""],
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "B L D"], Float[Array, ""]]:
        """Step back from ``t`` to ``t_b = α t``, ``α = clip(1 − γ(t_next − t), 0, 1)``, adding fresh
        noise: ``(1 − α)·s`` (``reference``) or ``s·√((1 − α)(1 + α − 2αt))`` (``consistent``: the
        noise level of ``t_b`` exactly). Returns ``(z_b, t_b)`` (docs/method.md#solvers)."""
        alpha = jnp.clip(1.0 - gamma * (t_next - t), 0.0, 1.0)
        if self.sde_noise == "reference":
            return alpha * z + (1.0 - alpha) * self.noise_scale * jax.random.normal(key, z.shape), alpha * t
        extra = jnp.sqrt(jnp.maximum((1.0 - alpha) * (1.0 + alpha - 2.0 * alpha * t), 0.0))
        return alpha * z + self.noise_scale * extra * jax.random.normal(key, z.shape), alpha * t

    def _euler(self, x_pred, z, t, t_next):
        return z + (t_next - t) * velocity(x_pred, z, jnp.full((z.shape[0],), t), self.t_eps)

    def solve(
        self, predict: Predict, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], key: PRNGKeyArray,
        cond: Condition | None = None,
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` with any x-prediction ``predict(z, x_prev, t)``
        (the ``cond`` positions held clean)."""
        b, length, d = z0.shape
        cond = cond if cond is not None else Condition.none(b, length, d)
        hold = lambda z: keep_condition(z, cond.x, cond.mask)  # noqa: E731
        n = grid.shape[0] - 1
        churn = jnp.where(jnp.arange(n) < n - 1, self.gamma if self.method == "sde" else 0.0, 0.0)
        step_keys = jax.random.split(key, n)
        start = (hold(z0), jnp.zeros_like(z0))
        sc = lambda x_new, x_prev: x_new if self.self_condition else x_prev  # noqa: E731

        def back(z, t, t_next, gamma, k):  # the churn, condition positions held clean
            z_b, t_b = self.churn(z, t, t_next, gamma, k)
            return hold(z_b), t_b

        if self.solver == "euler":  # the reference's loop, unchanged: every interval in one scan

            def step(carry, inputs):
                z, x_prev = carry
                t, t_next, gamma, k = inputs
                z_b, t_b = back(z, t, t_next, gamma, k)
                x_pred = predict(z_b, x_prev, t_b)
                z_next = hold(self._euler(x_pred, z_b, t_b, t_next))
                return (z_next, sc(x_pred, x_prev)), None

            (z1, _), _ = jax.lax.scan(step, start, (grid[:-1], grid[1:], churn, step_keys))
            return z1
        inputs = (grid[:-2], grid[1:-1], churn[:-1], step_keys[:-1])
        if self.solver == "heun":

            def step(carry, inputs):
                z, x_prev = carry
                t, t_next, gamma, k = inputs
                z_b, t_b = back(z, t, t_next, gamma, k)
                x1 = predict(z_b, x_prev, t_b)
                v1 = velocity(x1, z_b, jnp.full((b,), t_b), self.t_eps)
                z_e = hold(z_b + (t_next - t_b) * v1)
                x2 = predict(z_e, sc(x1, x_prev), t_next)
                v2 = velocity(x2, z_e, jnp.full((b,), t_next), self.t_eps)
                return (hold(z_b + (t_next - t_b) * 0.5 * (v1 + v2)), sc(x2, x_prev)), None

            (z, x_prev), _ = jax.lax.scan(step, start, inputs)
        else:  # dpm2m: exponential integrator in Λ, x̂ extrapolated linearly from the previous step

            def step(carry, inputs):
                z, x_prev, x_last, lam_last = carry
                t, t_next, gamma, k = inputs
                z_b, t_b = back(z, t, t_next, gamma, k)
                x = predict(z_b, x_prev, t_b)
                lam, lam_next = clipped_log_time(t_b, self.t_eps), clipped_log_time(t_next, self.t_eps)
                h, h_last = lam_next - lam, lam - lam_last
                # the first step (no previous x̂: lam_last = −inf) and repeated times stay first order
                ratio = jnp.where(jnp.isfinite(h_last) & (h_last > 0), h / (2.0 * jnp.where(h_last > 0, h_last, 1.0)), 0.0)
                x_bar = x + ratio * (x - x_last)
                decay = jnp.exp(-h)
                z_next = hold(decay * z_b + (1.0 - decay) * x_bar)
                return (z_next, sc(x, x_prev), x, lam), None

            (z, x_prev, _, _), _ = jax.lax.scan(step, (*start, jnp.zeros_like(z0), jnp.array(-jnp.inf)), inputs)
        # the last interval: an Euler ODE step, as in every sampler
        x_pred = predict(z, x_prev, grid[-2])
        return hold(self._euler(x_pred, z, grid[-2], grid[-1]))

    def integrate(
        self, model: ELF, z0: Float[Array, "B L D"], grid: Float[Array, " n_plus_1"], cond: Condition, key: PRNGKeyArray
    ) -> Float[Array, "B L D"]:
        """Carry ``z`` from ``grid[0]`` to ``grid[-1]`` with ``model``'s guided x̂ (the condition positions held clean)."""
        return self.solve(lambda z, x_prev, t: self.predict(model, z, x_prev, t, cond), z0, grid, key, cond)

    def decode(self, model: ELF, z1: Float[Array, "B L D"]) -> Int[Array, "B L"]:
        """Argmax tokens of ``net([z₁, 0], t=1, ω, decode)``."""
        logits = model.decode(jnp.concatenate([z1, jnp.zeros_like(z1)], -1), jnp.full((z1.shape[0],), self.omega))
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def __call__(
        self,
        model: ELF,
        key: PRNGKeyArray,
        *,
        batch_size: int | None = None,
        length: int | None = None,
        condition: Condition | None = None,
        z0: Float[Array, "B L D"] | None = None,
        eos_id: int | None = None,
        pad_id: int = 0,
    ) -> SampleOutput:
        """Draw samples. Give ``batch_size`` and ``length`` (unconditional), or a ``condition``,
        or an explicit start ``z0``; otherwise ``z0 ~ N(0, s²I)``. With ``eos_id``, target tokens
        from the first EOS on become ``pad_id``."""
        k_grid, k_noise, k_steps = jax.random.split(key, 3)
        d = model.config.encoder_dim
        if z0 is not None:
            shape = z0.shape
        elif condition is not None:
            shape = condition.x.shape
        elif batch_size is not None and length is not None:
            shape = (batch_size, length, d)
        else:
            raise ValueError("Sampler needs batch_size and length, a condition, or z0")
        if shape[-1] != d:
            raise ValueError(f"sample latents have {shape[-1]} features but the model's encoder_dim is {d}")
        cond = condition if condition is not None else Condition.none(shape[0], shape[1], d)
        if z0 is None:
            z0 = self.noise_scale * jax.random.normal(k_noise, shape, jnp.float32)
        z1 = self.integrate(model, z0, self.grid(k_grid), cond, k_steps)
        tokens = self.decode(model, z1)
        if eos_id is not None:
            tokens = mask_after_eos(tokens, eos_id, pad_id, ~cond.mask)
        return SampleOutput(z1, tokens)
