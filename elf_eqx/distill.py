"""``python -m elf_eqx.distill``: progressive distillation of a trained ELF into few-step students.

    python -m elf_eqx.distill runs/quickstart --preset quickstart --output-dir runs/quickstart_distilled
    python -m elf_eqx.distill runs/kjv_elf_xs --from-steps 32 --to-steps 4 --steps-per-round 600 --output-dir runs/kjv_students

Each round halves the student's steps; its student is an ordinary run in ``OUTPUT_DIR/steps_<n>``
(``python -m elf_eqx.sample OUTPUT_DIR`` samples the newest). Rerunning the same command resumes;
SIGTERM/SIGINT finish the step, save and exit 0.
"""

from __future__ import annotations

from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.distillation.config import parse_distill_config
from elf_eqx.distillation.rounds import distill
from elf_eqx.parallel.supervisor import ResumeHint, launch


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry: parse flags, distil; expected failures end as one line (exit 2, see
    :mod:`elf_eqx.cli.errors`; ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = parse_distill_config(argv)
    launch("elf_eqx.distill", argv, lambda: distill(cfg), flags=cfg.mesh, max_restarts=cfg.run.max_restarts,
           resume=ResumeHint(cfg.run.output_dir))


if __name__ == "__main__":
    main()
