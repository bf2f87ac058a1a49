"""The GPU benchmark suite: one command that measures training and sampling speed of ELF.

    python benchmarks/gpu_suite.py                      # one GPU, under 8 minutes
    python benchmarks/gpu_suite.py --smoke              # the same suite on the CPU, ELF-T-sized, seconds

Rows (L = 1024, T5-small-sized frozen encoder with random weights inside the step):
ELF-B at batch 8 and 32, ELF-M and ELF-L at the largest batch that fits (bounded search: the
compiled step's memory at batches 8 and 16 gives a per-sample slope; the largest multiple of 8
predicted under 92% of the device's memory, capped at 256, is compiled and checked, stepping
down by 8 if it does not fit). Each training row reports seconds per step, tokens/s, MFU,
the compiled program's memory (XLA's ``memory_analysis``: arguments + outputs + temporaries −
donated aliases), the process's peak bytes so far, and the compile time. Then ELF-B sampling
(32 SDE steps) at batch 32 and 256 in samples/s, and the input pipeline (token rows through the
data loader to device arrays) in batches/s at batch 32. It prints a table and writes JSON.

FLOP count (the MFU numerator): ``elf_eqx.families.train_step_flops`` — matmul FLOPs of the blocks,
input projections and heads, a no-grad pass plus a forward-backward per denoise sample, a
forward-backward per decode sample, and the frozen encoder's forward pass (docs/method.md#baselines).

MFU = FLOPs / (s/step) / peak, with the peak dense bf16 rate of the device (H100/H200 SXM:
989 TFLOP/s; ``--peak-tflops`` overrides; no MFU where the peak is unknown, e.g. on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import first_call_seconds, memory_limit_bytes, peak_memory_gib, timed  # noqa: E402

from elf_eqx.cli.errors import run_parsed
from elf_eqx.config import ComputeDtype, ELFConfig, preset  # noqa: E402
from elf_eqx.encoders.latent_encoder import LatentEncoder, TokenBatch  # noqa: E402
from elf_eqx.encoders.t5 import T5Config, T5Encoder  # noqa: E402
from elf_eqx.families import train_step_flops  # noqa: E402
from elf_eqx.model import ELF, count_params  # noqa: E402
from elf_eqx.observe.chips import peak_flops_for  # noqa: E402
from elf_eqx.objective import FlowObjective  # noqa: E402
from elf_eqx.sampler import Sampler  # noqa: E402
from elf_eqx.training.optim import make_optimizer  # noqa: E402
from elf_eqx.training.step import TrainState, make_train_step, objective_parts  # noqa: E402

T5_SMALL = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
T5_TINY = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)


@dataclasses.dataclass(frozen=True)
class Args:
    smoke: bool = False
    """Run the whole suite on the CPU with ELF-T-sized models and tiny shapes (for CI; no timings meant)."""
    out: str = "benchmarks/results/gpu_suite.json"
    """Where the JSON goes."""
    steps: int = 10
    """Timed training steps per row (after the compiling call)."""
    budget_s: float = 450.0
    """Rows not started within this many seconds are skipped (and say so)."""
    peak_tflops: float | None = None
    """Override the device's peak dense bf16 TFLOP/s used for MFU."""
    compute_dtype: ComputeDtype = "auto"
    """Activation dtype (auto: bf16 on GPU)."""
    attention: str = "auto"
    """auto, xla or cudnn."""


@dataclasses.dataclass(frozen=True)
class Plan:
    length: int
    encoder: T5Config
    train_rows: tuple[tuple[str, str, int | None], ...]  # (label, preset, batch or None = search)
    search: tuple[int, int, int]  # first probe, second probe, cap
    sample_rows: tuple[tuple[int, int], ...]  # (batch, steps)
    pipeline_batch: int
    steps: int


def plan_for(args: Args) -> Plan:
    if args.smoke:
        rows = (("ELF-B b8", "ELF-T", 2), ("ELF-B b32", "ELF-T", 4), ("ELF-M max", "ELF-T", None), ("ELF-L max", "ELF-T", None))
        return Plan(32, T5_TINY, rows, (2, 4, 4), ((4, 2), (8, 2)), 4, 2)
    rows = (("ELF-B b8", "ELF-B", 8), ("ELF-B b32", "ELF-B", 32), ("ELF-M max", "ELF-M", None), ("ELF-L max", "ELF-L", None))
    return Plan(1024, T5_SMALL, rows, (8, 16, 256), ((32, 32), (256, 32)), 32, args.steps)


# -- FLOPs -----------------------------------------------------------------------------------------

def peak_flops(args: Args) -> float | None:
    if args.peak_tflops is not None:
        return args.peak_tflops * 1e12
    device = jax.devices()[0]
    return peak_flops_for(device.device_kind, device.platform)[0]


# -- pieces ------------------------------------------------------------------------------------------

def token_batch(batch: int, length: int, vocab: int, seed: int = 0) -> TokenBatch:
    """Random ids with every position valid and scored (unconditional rows)."""
    ids = np.random.default_rng(seed).integers(2, vocab, (batch, length), dtype=np.int32)
    ones = np.ones((batch, length), bool)
    return TokenBatch.from_numpy({"input_ids": ids, "valid_mask": ones, "cond_mask": ~ones, "loss_mask": ones})


class TrainBench:
    """One model preset: its state, step function and frozen encoder, compiled per batch size."""

    def __init__(self, name: str, plan: Plan, args: Args):
        self.cfg = preset(name, encoder_dim=plan.encoder.d_model, vocab_size=plan.encoder.vocab_size,
                          compute_dtype=args.compute_dtype, attention=args.attention)
        self.plan = plan
        self.objective = FlowObjective()
        abstract = eqx.filter_eval_shape(ELF, self.cfg, key=jax.random.key(0))
        self.optimizer = make_optimizer(abstract, 1e-4, name="muon")
        self.state = jax.jit(lambda k: TrainState.create(ELF(self.cfg, key=k), self.optimizer))(jax.random.key(0))
        t5 = jax.jit(lambda k: T5Encoder(plan.encoder, key=k))(jax.random.key(1))
        self.encoder = LatentEncoder(t5, compute_dtype=args.compute_dtype)
        self.step = make_train_step(self.optimizer)
        self.compiled: dict[int, tuple[object, float, float | None]] = {}

    def compile(self, batch: int):
        """``(program, compile seconds, program bytes)`` for ``batch``, cached."""
        if batch not in self.compiled:
            tokens = token_batch(batch, self.plan.length, self.cfg.vocab_size)
            start = time.perf_counter()
            program = self.step.lower(self.state, tokens, jax.random.key(2), self.objective, self.encoder).compile()
            seconds = time.perf_counter() - start
            self.compiled[batch] = (program, seconds, program_bytes(program))
        return self.compiled[batch]

    def largest_batch(self, limit: int | None) -> tuple[int, str]:
        """The bounded search of the module docstring; with no known memory limit (CPU), the cap."""
        first, second, cap = self.plan.search
        if limit is None:
            return cap, "no device memory limit known: the search cap"
        m1, m2 = self.compile(first)[2], self.compile(second)[2]
        if m1 is None or m2 is None:
            return second, "no memory analysis: the second probe"
        slope = max((m2 - m1) / (second - first), 1.0)
        step = first
        guess = int((0.92 * limit - m1) / slope) + first
        batch = max(min(cap, guess // step * step), first)
        while batch > first:
            mem = self.compile(batch)[2]
            if mem is not None and mem <= 0.92 * limit:
                break
            self.compiled.pop(batch, None)
            batch -= step
        return batch, f"predicted from batches {first} and {second}: {m1 / 2**30:.1f} + {slope / 2**30:.3f}·(b−{first}) GiB"

    def run(self, batch: int, steps: int) -> dict:
        program, compile_s, mem = self.compile(batch)
        tokens = token_batch(batch, self.plan.length, self.cfg.vocab_size, seed=3)
        key = jax.random.key(4)
        holder = {"state": self.state}
        arrays = objective_parts(self.objective)[0]  # what the compiled program takes of the objective (none of ELF's)

        def one():
            holder["state"], metrics = program(holder["state"], tokens, key, arrays, self.encoder)
            return metrics["loss"]

        first_s, _ = first_call_seconds(one)
        s_step = timed(one, steps, warmup=False)
        self.state = holder["state"]
        return {"batch": batch, "s_per_step": s_step, "first_call_s": first_s, "compile_s": compile_s,
                "program_gib": None if mem is None else mem / 2**30, "peak_gib_so_far": peak_memory_gib()}

    def drop_programs(self) -> None:
        self.compiled.clear()


def program_bytes(program) -> float | None:
    """Device bytes a compiled program needs: arguments + outputs + temporaries − donated aliases."""
    try:
        m = program.memory_analysis()
        return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # backends without the analysis
        return None


def sampling_row(model: ELF, batch: int, steps: int, length: int) -> dict:
    """Samples/s of ``steps``-step SDE sampling at ``batch`` (compiled once; mean of 2 calls)."""
    sampler = Sampler(num_steps=steps, method="sde", gamma=1.5, omega=3.0)
    sample = eqx.filter_jit(lambda m, k: sampler(m, k, batch_size=batch, length=length).tokens)
    compile_s, _ = first_call_seconds(lambda: sample(model, jax.random.key(5)))
    seconds = timed(lambda: sample(model, jax.random.key(6)), 2, warmup=False)
    return {"batch": batch, "sde_steps": steps, "s_per_batch": seconds, "samples_per_s": batch / seconds,
            "first_call_s": compile_s}


def pipeline_row(batch: int, length: int, vocab: int, batches: int = 20) -> dict:
    """Batches/s of token rows → data loader (collate) → device ``TokenBatch``."""
    import datasets

    from elf_eqx.data.loader import Loader
    from elf_eqx.data.spec import DataSpec

    rng = np.random.default_rng(0)
    rows = datasets.Dataset.from_dict({
        "input_ids": [rng.integers(2, vocab, rng.integers(length // 2, length + 1)).tolist() for _ in range(batch * 4)],
        "cond_length": [0] * (batch * 4),
    })
    loader = Loader(rows, DataSpec(vocab_size=vocab, pad_id=0, eos_id=1, max_length=length), batch)
    jax.block_until_ready(TokenBatch.from_numpy(next(loader)))
    start = time.perf_counter()
    for _ in range(batches):
        out = TokenBatch.from_numpy(next(loader))
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - start) / batches
    return {"batch": batch, "length": length, "batches_per_s": 1.0 / seconds}


# -- the suite --------------------------------------------------------------------------------------

def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except Exception:
        return None


def main(args: Args) -> dict:
    start = time.perf_counter()
    plan = plan_for(args)
    peak = peak_flops(args)
    limit = memory_limit_bytes()
    result: dict = {
        "device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
        "commit": _commit(), "command": " ".join(["python", "benchmarks/gpu_suite.py", *sys.argv[1:]]),
        "length": plan.length, "encoder": dataclasses.asdict(plan.encoder), "peak_flops": peak,
        "memory_limit_gib": None if limit is None else limit / 2**30, "train": [], "sampling": [], "pipeline": None,
    }
    benches: dict[str, TrainBench] = {}
    for label, name, batch in plan.train_rows:
        if time.perf_counter() - start > args.budget_s:
            result["train"].append({"row": label, "skipped": "time budget spent"})
            continue
        for other in list(benches):  # one model's state on the device at a time
            if other != name:
                del benches[other]
        bench = benches.get(name) or benches.setdefault(name, TrainBench(name, plan, args))
        note = None
        try:
            if batch is None:
                batch, note = bench.largest_batch(limit)
            row = bench.run(batch, plan.steps)
        except Exception as err:  # an out-of-memory row is a result, not the end of the suite
            result["train"].append({"row": label, "model": name, "batch": batch, "error": str(err).splitlines()[0][:300]})
            continue
        flops = train_step_flops("elf", bench.cfg, batch, plan.length, objective=bench.objective,
                                 encoder_config=plan.encoder)
        row.update(row=label, model=name, params=count_params(bench.state.model), remat=bench.cfg.remat,
                   compute_dtype=bench.cfg.dtype.name, tokens_per_s=batch * plan.length / row["s_per_step"],
                   tflops_per_step=flops / 1e12, mfu=None if peak is None else flops / row["s_per_step"] / peak,
                   search=note)
        result["train"].append(row)
        bench.drop_programs()

    name = plan.train_rows[0][1]
    bench = benches.get(name) or TrainBench(name, plan, args)
    benches.clear()
    ema = bench.state.ema
    for batch, steps in plan.sample_rows:
        if time.perf_counter() - start > args.budget_s:
            result["sampling"].append({"batch": batch, "skipped": "time budget spent"})
            continue
        try:
            result["sampling"].append(sampling_row(ema, batch, steps, plan.length))
        except Exception as err:
            result["sampling"].append({"batch": batch, "error": str(err).splitlines()[0][:300]})
    del bench, ema
    result["pipeline"] = pipeline_row(plan.pipeline_batch, plan.length, plan.encoder.vocab_size)
    result["total_s"] = time.perf_counter() - start
    print(format_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(result: dict) -> str:
    """The printed summary of a suite result."""
    lines = [f"device {result['device']} ({result['backend']}), jax {result['jax']}, commit {result['commit']}, "
             f"L {result['length']}",
             f"{'row':<11} {'model':<6} {'batch':>5} {'remat':<13} {'s/step':>8} {'tokens/s':>10} {'MFU':>6} "
             f"{'prog GiB':>8} {'peak GiB':>8} {'compile s':>9}"]
    for r in result["train"]:
        if "s_per_step" not in r:
            lines.append(f"{r['row']:<11} {r.get('model', ''):<6} {str(r.get('batch', '')):>5} "
                         f"{r.get('skipped') or r.get('error')}")
            continue
        lines.append(f"{r['row']:<11} {r['model']:<6} {r['batch']:>5} {r['remat']:<13} {r['s_per_step']:>8.4f} "
                     f"{r['tokens_per_s']:>10,.0f} {'-' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + '%':>6} "
                     f"{_fmt(r['program_gib'], '.2f'):>8} {_fmt(r['peak_gib_so_far'], '.2f'):>8} {r['compile_s']:>9.1f}")
    for r in result["sampling"]:
        if "samples_per_s" in r:
            lines.append(f"sampling  batch {r['batch']:>4} × {r['sde_steps']} SDE steps: {r['s_per_batch']:.3f} s/batch, "
                         f"{r['samples_per_s']:,.1f} samples/s (first call {r['first_call_s']:.1f} s)")
        else:
            lines.append(f"sampling  batch {r['batch']:>4}: {r.get('skipped') or r.get('error')}")
    p = result["pipeline"]
    if p:
        lines.append(f"input pipeline batch {p['batch']} × L {p['length']}: {p['batches_per_s']:,.1f} batches/s")
    return "\n".join(lines)


if __name__ == "__main__":
    run_parsed(Args, main)
