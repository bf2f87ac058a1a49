"""``python -m elf_eqx.inspect``: one screen per training run folder, also while it is written.

    python -m elf_eqx.inspect runs/quickstart
    python -m elf_eqx.inspect runs/a runs/b --plot runs.png          # loss, tok/s, MFU, memory (Gen. PPL) vs step
    python -m elf_eqx.inspect runs/elf_b --dry-run-json plan.jsonl    # measured beside a dry run's estimate

For each run: family and model, config differences from its preset, steps, tokens, training FLOPs,
last and best loss, step time, tokens/s and MFU (median and spread), data wait, device memory,
compile time, checkpoints present and whether each is complete, sample files and eval records
(README.md, "Seeing inside a run"). Reads files only: starts no accelerator.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import tyro

from elf_eqx.io.storage import is_remote, local_path, user_path
from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.errors import ConfigError, MissingInputError
from elf_eqx.observe.run_folder import RunFolder, read_eval
from elf_eqx.observe.summary import against_dry_run, summarise


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Summarise training run folders (also while they are written); plot them; read them against a dry run."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """Run output directories (what --output-dir named)."""
    plot: str | None = None
    """Write a PNG of loss, tokens/s, MFU and device memory against step (and Gen. PPL where eval records exist), the runs side by side."""
    dry_run_json: str | None = None
    """The JSON lines a dry run printed (--dry-run --json): its estimate and compiled memory beside each run's measured figures."""
    evals: tuple[str, ...] = ()
    """Eval results kept outside the run folders (python -m elf_eqx.eval's .eval.json), given to the run whose folder their samples came from."""


def read_dry_run(path: str) -> list[dict]:
    """The reports of a dry run's ``--json`` output (one JSON object per line)."""
    file = local_path(path, "--dry-run-json", "a dry run's printed JSON")
    if not file.is_file():
        raise MissingInputError(f"--dry-run-json file {path} does not exist")
    reports = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if line.strip():
            try:
                reports.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"--dry-run-json {path}, line {number}: not JSON (give what --dry-run --json printed)") from None
    if not reports or not all(isinstance(r, dict) and "target" in r for r in reports):
        raise ConfigError(f"--dry-run-json {path}: no dry-run report in it (give what --dry-run --json printed)")
    return reports


def _owner(evals_source: str | None, runs: list[Any]) -> Any:
    if not evals_source:
        return None
    if is_remote(evals_source) or any(is_remote(run) for run in runs):  # bucket paths: by name
        text = evals_source.rstrip("/")
        return next((run for run in runs if text == str(run) or text.startswith(str(run) + "/")), None)
    source = Path(evals_source).resolve()
    return next((run for run in runs if source == run.resolve() or run.resolve() in source.parents), None)


def inspect_runs(cfg: InspectConfig) -> str:
    """The text :func:`main` prints (and the plot written, when asked)."""
    if not cfg.runs:
        raise ConfigError("give at least one run folder")
    paths = [user_path(p, "the run folder") for p in cfg.runs]
    extra: dict[Path, list] = {}
    for name in cfg.evals:
        record = read_eval(Path(name))
        if record is None:
            raise MissingInputError(f"--evals {name}: not an eval result (python -m elf_eqx.eval's .eval.json)")
        source = json.loads(Path(name).read_text()).get("settings", {}) or {}
        owner = _owner(source.get("source"), paths)
        if owner is not None:
            extra.setdefault(owner, []).append(record)
    runs = [RunFolder.read(p, extra.get(p, ())) for p in paths]
    reports = read_dry_run(cfg.dry_run_json) if cfg.dry_run_json else None
    screens = []
    for run in runs:
        screens.append(summarise(run))
        if reports is not None:
            screens.append(against_dry_run(run, reports))
    if cfg.plot:
        from elf_eqx.observe.plot import plot_runs

        screens.append(f"wrote {plot_runs(runs, cfg.plot)}")
    return "\n\n".join(screens)


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures (a missing run folder, a bad file) end as one line (exit 2)."""
    with flag_errors():
        cfg = tyro.cli(InspectConfig, args=argv)
    print(inspect_runs(cfg), flush=True)


if __name__ == "__main__":
    main()
