"""``python -m elf_eqx.inspect RUN ... --plot OUT.png``: loss, tokens/s, MFU and device memory
against step (and Gen. PPL where eval records exist), one line per run on shared panels
(``pip install 'elf_eqx[bench]'`` for matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from elf_eqx.io.atomic import staged_file
from elf_eqx.observe.run_folder import RunFolder

PANELS = (("loss", "loss"), ("tokens_per_s", "tokens/s"), ("mfu", "MFU"), ("memory_peak_gib", "device memory peak (GiB)"))


def plot_runs(runs: Sequence[RunFolder], out: str | Path) -> Path:
    """Write the plot of ``runs`` to ``out`` (atomically; the format from its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(PANELS)
    if any(e.step is not None and "gen_ppl" in e.figures for run in runs for e in run.evals):
        panels.append(("gen_ppl", "Gen. PPL (eval records)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (field, title) in zip(axes[0], panels):
        shown = False
        for run in runs:
            if field == "gen_ppl":
                points = sorted((e.step, e.figures["gen_ppl"]) for e in run.evals
                                if e.step is not None and "gen_ppl" in e.figures)
            else:
                points = [(r["step"], r[field]) for r in run.records if isinstance(r.get(field), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=run.path.name or str(run.path))
                shown = True
        ax.set_title(title)
        ax.set_xlabel("step")
        if field == "mfu" and shown:
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        if not shown:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif len(runs) > 1:
            ax.legend(fontsize="small")
    fig.tight_layout()
    from elf_eqx.io.storage import local_path
    out = local_path(out, "--plot", "matplotlib writes a local file")
    with staged_file(out) as partial:
        fig.savefig(partial)
    plt.close(fig)
    return out
