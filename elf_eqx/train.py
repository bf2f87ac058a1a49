"""``python -m elf_eqx.train``: train ELF end to end (data → frozen encoder → flow objective).

    python -m elf_eqx.train --preset quickstart            # offline, 2 CPU cores, minutes
    python -m elf_eqx.train --model ELF-M --config configs/owt_elf_m.yaml

Checkpoints, metrics.jsonl and samples/ go to ``--output-dir``; rerunning the same command
resumes from the last complete checkpoint there. SIGTERM/SIGINT finish the step, save and exit 0.
"""

from __future__ import annotations

from elf_eqx.parallel.distributed import initialize_distributed
from elf_eqx.training.config import parse_train_config
from elf_eqx.training.loop import NonFiniteLoss, train


def main(argv: list[str] | None = None) -> None:
    """CLI entry: parse flags, train; known failures end as one line naming the culprit."""
    cfg = parse_train_config(argv)
    try:
        initialize_distributed(cfg.mesh.coordinator_address, cfg.mesh.num_processes, cfg.mesh.process_id)
        train(cfg)
    except (ValueError, FileNotFoundError, NonFiniteLoss) as err:  # DataError, mismatches, bad files
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
