"""``python -m elf_eqx.train``: train ELF end to end (data → frozen encoder → flow objective).

    python -m elf_eqx.train --preset quickstart            # offline, 2 CPU cores, minutes
    python -m elf_eqx.train --model ELF-M --config configs/owt_elf_m.yaml

Checkpoints, metrics.jsonl and samples/ go to ``--output-dir``; rerunning the same command
resumes from the last complete checkpoint there. SIGTERM/SIGINT finish the step, save and exit 0;
on several hosts every process stops after the same step (README, "Launching").
"""

from __future__ import annotations

from elf_eqx.aot.cli import print_dry_run
from elf_eqx.aot.dry_run import dry_run_train
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.parallel.supervisor import ResumeHint, launch
from elf_eqx.training.config import parse_train_config
from elf_eqx.training.loop import train


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry: parse flags, train; expected failures end as one line (exit 2, see
    :mod:`elf_eqx.cli.errors`; ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = parse_train_config(argv)
    if cfg.plan.dry_run:
        plan = cfg.plan
        print_dry_run(plan, lambda: dry_run_train(cfg, plan.target, max_batch=plan.max_batch,
                                                  epoch_rows=plan.epoch_rows, estimate=plan.estimate,
                                                  full_twin=plan.full_twin))
        return
    launch("elf_eqx.train", argv, lambda: train(cfg), flags=cfg.mesh, max_restarts=cfg.run.max_restarts,
           resume=ResumeHint(cfg.run.output_dir, cfg.run.resume_step))


if __name__ == "__main__":
    main()
