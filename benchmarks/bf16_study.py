"""bf16 against float32, run against run: the same ELF-XS run on KJV trained twice on the CPU, once
with ``--compute-dtype float32`` and once under the accelerators' bf16 precision policy forced on
the CPU (``--compute-dtype bfloat16``; docs/method.md#precision), then compared:

* the loss curves side by side (mean of the last 10% of steps, the gap against step) and the
  gradient norms;
* sample quality of both at 32 ODE and 32 SDE steps under the offline KJV judge (Gen. PPL and
  entropy of ``--num-samples`` samples each);
* sampling in bf16 against float32 from the same float32 weights under identical noise (the same
  seed): tokens that agree, and the Gen. PPL of each;
* per-layer statistics and Muon's Newton–Schulz in bf16 against float32 (``bf16_probe.py``).

    python benchmarks/bf16_study.py --judge runs/kjv_judge_8k --output-dir runs/bf16_study
    python benchmarks/bf16_study.py ... --train-args "--data ../shared/data/kjv/train.jsonl --max-steps 1500 \\
        --warmup-steps 100 --ema-decay 0.999"          # the 1,500-step KJV run's configuration

Every stage writes its files and is skipped when they exist; training resumes from its last
checkpoint (rerunning ``python -m elf_eqx.train`` with the same output directory), so an interrupted
study is finished by running the same command again. Long jobs are best started with ``nice``.
The report goes to ``OUTPUT_DIR/report.json`` and ``report.md``, the curves to ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ARMS = ("float32", "bfloat16")
TRAIN_ARGS = ["--preset", "quickstart", "--log-every", "1", "--keep-checkpoints", "6", "--sampling.every", "250"]
SAMPLERS = {  # the released sampler's SDE and the Euler ODE, as in the KJV steps-vs-PPL sweep
    "ode": ["--method", "ode", "--solver", "euler", "--omega", "3.0"],
    "sde": ["--method", "sde", "--solver", "euler", "--sde-noise", "reference", "--gamma", "1.5", "--omega", "3.0"],
}
BOUNDS = {"loss": 0.02, "gen_ppl": 0.05, "entropy": 0.02}
"""The study's bounds: relative gaps of the last-10% mean loss, Gen. PPL and entropy."""


def run(command: list[str]) -> None:
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def train_args(arm: str, out: Path, extra: list[str]) -> list[str]:
    """The training command line of one arm (everything but the interpreter)."""
    return [*TRAIN_ARGS, *extra, "--output-dir", str(out / arm), "--compute-dtype", arm]


def metrics(run_dir: Path) -> dict[int, dict]:
    """``step → record`` of a run's ``metrics.jsonl`` (a resumed run's later record of a step wins)."""
    records = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["step"]] = record
    return records


def train(out: Path, extra: list[str], at_step: int) -> None:
    """Train (or resume) each arm until it has reached ``at_step`` (training runs to its own end)."""
    for arm in ARMS:
        if max(metrics(out / arm), default=0) < at_step or not (out / arm / "checkpoints" / str(at_step)).is_dir():
            run([sys.executable, "-m", "elf_eqx.train", *train_args(arm, out, extra)])


def curves(out: Path, at_step: int) -> dict:
    """Last-10% means (of the steps up to ``at_step``) of loss, l2, ce and grad norm per arm, their
    relative gaps, and the plot."""
    runs = {arm: metrics(out / arm) for arm in ARMS}
    steps = sorted(s for s in set(runs["float32"]) & set(runs["bfloat16"]) if s <= at_step)
    tail = [s for s in steps if s > at_step - max(1, at_step // 10)]
    summary: dict = {"steps": len(steps), "tail_steps": [tail[0], tail[-1]] if tail else []}
    for key in ("loss", "l2", "ce", "grad_norm"):
        means = {arm: float(np.mean([runs[arm][s][key] for s in tail])) for arm in ARMS}
        summary[key] = {**means, "rel_gap": means["bfloat16"] / means["float32"] - 1}
    gap = np.array([runs["bfloat16"][s]["loss"] / runs["float32"][s]["loss"] - 1 for s in steps])
    summary["loss_gap_abs_mean"] = float(np.mean(np.abs(gap)))
    summary["loss_gap_by_quarter"] = [float(np.mean(q)) for q in np.array_split(gap, 4)]
    plot_curves(out / "curves.png", runs, steps, gap)
    return summary


def smooth(values: np.ndarray, width: int = 10) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid") if len(values) >= width else values


def plot_curves(path: Path, runs: dict, steps: list[int], gap: np.ndarray) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange")):
        for ax, key in ((axes[0], "loss"), (axes[2], "grad_norm")):
            values = np.array([runs[arm][s][key] for s in steps])
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.7)
            ax.plot(steps[len(steps) - len(smooth(values)):], smooth(values), color=colour, label=arm)
    axes[1].plot(steps, 100 * gap, color="grey", alpha=0.35, linewidth=0.7, label="per step")
    axes[1].plot(steps[len(steps) - len(smooth(gap, 25)):], 100 * smooth(gap, 25), color="black", label="25-step mean")
    axes[1].axhline(0, color="black", linewidth=0.5)
    for ax, title in zip(axes, ("loss", "loss gap (bf16 − f32) / f32, %", "gradient norm (before clipping)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sample(out: Path, arm: str, at_step: int, method: str, num: int, steps: int, dtype: str | None = None,
           seed: int = 0) -> Path:
    """Samples of ``arm``'s EMA weights at training step ``at_step`` with ``method`` at ``steps``
    steps, seed 0 (the same noise for every arm) unless ``seed``; ``dtype`` overrides the compute
    dtype the weights are sampled in."""
    tag = f"{arm}-step{at_step}-{method}{steps}" + (f"-as-{dtype}" if dtype else "") + (f"-seed{seed}" if seed else "")
    path = out / "samples" / f"{tag}.jsonl"
    if not path.exists():
        extra = ["--compute-dtype", dtype] if dtype else []
        run([sys.executable, "-m", "elf_eqx.sample", str(out / arm), "--step", str(at_step), *SAMPLERS[method],
             "--steps", str(steps),
             "--num-samples", str(num), "--batch-size", "64", "--seed", str(seed), "--quiet", "--output", str(path), *extra])
    return path


def judge(samples: Path, judge_dir: str) -> dict:
    """Gen. PPL and entropy of a samples file under the judge (``python -m elf_eqx.eval``)."""
    path = samples.with_suffix(".eval.json")
    if not path.exists():
        run([sys.executable, "-m", "elf_eqx.eval", "--samples", str(samples), "--judge", judge_dir,
             "--output", str(path), "--no-progress"])
    result = json.loads(path.read_text())
    return {key: result[key] for key in ("gen_ppl", "entropy")}


def token_ids(path: Path) -> np.ndarray:
    return np.array([json.loads(line)["token_ids"] for line in path.read_text().splitlines() if line.strip()])


def agreement(a: Path, b: Path) -> dict:
    """How far two sample files drawn under identical noise agree: the share of equal tokens, of
    identical samples, and the mean position of a sample's first disagreement."""
    x, y = token_ids(a), token_ids(b)
    same = x == y
    first = np.where(same.all(axis=1), x.shape[1], np.argmin(same, axis=1))
    return {"tokens": float(same.mean()), "samples": float(same.all(axis=1).mean()),
            "first_difference_mean": float(first.mean()), "length": int(x.shape[1])}


def quality(out: Path, at_step: int, num: int, steps: int, judge_dir: str) -> dict:
    """Judge scores of both arms under both samplers, and bf16 sampling of the float32 weights."""
    scores: dict = {}
    for method in SAMPLERS:
        per = {arm: judge(sample(out, arm, at_step, method, num, steps), judge_dir) for arm in ARMS}
        as_bf16 = sample(out, "float32", at_step, method, num, steps, dtype="bfloat16")
        per["float32 weights sampled in bf16"] = judge(as_bf16, judge_dir)
        # the noise floor: the same float32 weights under other noise
        per["float32, another seed"] = judge(sample(out, "float32", at_step, method, num, steps, seed=1), judge_dir)
        gaps = {key: per["bfloat16"][key] / per["float32"][key] - 1 for key in ("gen_ppl", "entropy")}
        sampling_gaps = {key: per["float32 weights sampled in bf16"][key] / per["float32"][key] - 1
                         for key in ("gen_ppl", "entropy")}
        seed_gaps = {key: per["float32, another seed"][key] / per["float32"][key] - 1 for key in ("gen_ppl", "entropy")}
        scores[method] = {"scores": per, "trained_rel_gap": gaps, "sampling_rel_gap": sampling_gaps,
                          "seed_rel_gap": seed_gaps,
                          "agreement": agreement(sample(out, "float32", at_step, method, num, steps), as_bf16)}
    return scores


def verdict(summary: dict, scores: dict) -> dict:
    """Each bound met or not (relative gaps against :data:`BOUNDS`)."""
    met = {"loss (last 10%)": abs(summary["loss"]["rel_gap"]) <= BOUNDS["loss"]}
    for method, s in scores.items():
        met[f"{method} Gen. PPL"] = abs(s["trained_rel_gap"]["gen_ppl"]) <= BOUNDS["gen_ppl"]
        met[f"{method} entropy"] = abs(s["trained_rel_gap"]["entropy"]) <= BOUNDS["entropy"]
    return met


def report_markdown(report: dict) -> str:
    c = report["curves"]
    lines = [f"Step {report['at_step']} of {report['max_steps']}.", "", "| | float32 | bf16 policy | gap |", "|---|---|---|---|"]
    for key in ("loss", "l2", "ce", "grad_norm"):
        lines.append(f"| {key}, mean of steps {c['tail_steps'][0]}–{c['tail_steps'][1]} | {c[key]['float32']:.4f} | "
                     f"{c[key]['bfloat16']:.4f} | {100 * c[key]['rel_gap']:+.2f}% |")
    lines += ["", "| sampler | weights | Gen. PPL | entropy |", "|---|---|---|---|"]
    for method, s in report["quality"].items():
        for name, v in s["scores"].items():
            lines.append(f"| {method} {report['sample_steps']} | {name} | {v['gen_ppl']:.2f} | {v['entropy']:.3f} |")
    lines += ["", "| sampler | trained in bf16: Gen. PPL gap | entropy gap | sampled in bf16: Gen. PPL gap | entropy gap | "
              "another seed: Gen. PPL gap | entropy gap | tokens agreeing | samples identical |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, s in report["quality"].items():
        t, g, n, a = s["trained_rel_gap"], s["sampling_rel_gap"], s["seed_rel_gap"], s["agreement"]
        lines.append(f"| {method} | {100 * t['gen_ppl']:+.2f}% | {100 * t['entropy']:+.2f}% | {100 * g['gen_ppl']:+.2f}% | "
                     f"{100 * g['entropy']:+.2f}% | {100 * n['gen_ppl']:+.2f}% | {100 * n['entropy']:+.2f}% | "
                     f"{100 * a['tokens']:.1f}% | {100 * a['samples']:.1f}% |")
    lines += ["", "Bounds: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in report["bounds_met"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/bf16_study")
    parser.add_argument("--judge", required=True, help="an offline judge folder (benchmarks/train_judge.py)")
    parser.add_argument("--train-args", default="", help="extra training flags for both arms (one string)")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--sample-steps", type=int, default=32)
    parser.add_argument("--at-step", type=int, default=None,
                        help="compare the runs at this saved step (default: their last; the schedule stays the run's)")
    parser.add_argument("--skip-probe", action="store_true", help="leave out bf16_probe.py's statistics")
    args = parser.parse_args()
    from elf_eqx.io.storage import local_path
    out, extra = local_path(args.output_dir, "--output-dir"), shlex.split(args.train_args)
    out.mkdir(parents=True, exist_ok=True)

    from elf_eqx.training.config import parse_train_config

    cfg = parse_train_config(train_args("float32", out, extra))
    at_step = args.at_step or cfg.optimizer.max_steps
    train(out, extra, at_step)
    report = {"train_command": ["python", "-m", "elf_eqx.train", *train_args("ARM", out, extra)],
              "max_steps": cfg.optimizer.max_steps, "at_step": at_step, "sample_steps": args.sample_steps,
              "num_samples": args.num_samples, "bounds": BOUNDS, "curves": curves(out, at_step)}
    report["quality"] = quality(out, at_step, args.num_samples, args.sample_steps, args.judge)
    report["bounds_met"] = verdict(report["curves"], report["quality"])
    if not args.skip_probe:
        probe = out / "probe.json"
        if not probe.exists():
            run([sys.executable, str(Path(__file__).with_name("bf16_probe.py")), "--output-dir", str(out),
                 "--at-step", str(at_step), "--train-args", args.train_args])
        report["probe"] = json.loads(probe.read_text())
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    print(report_markdown(report))


if __name__ == "__main__":
    main()
