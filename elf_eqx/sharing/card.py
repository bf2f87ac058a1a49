"""The model card (``README.md``) of an exported model, written from its record and its run's own
records: what the model is, the data, steps, tokens and training FLOPs (``metrics.jsonl``), the
default sampler, the metrics of its eval records with their judge, the commands that reproduce it,
the license and the citation. Hugging Face reads the YAML front matter (``library_name``,
``license``, ``tags``, ``pipeline_tag``, ``datasets``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elf_eqx.encoders.sources import is_hub_id
from elf_eqx.io import storage
from elf_eqx.observe.run_folder import EvalRecord, read_records
from elf_eqx.release.tasks import preset_name
from elf_eqx.sharing.record import ExportRecord

_FAMILY_TEXT = {
    "elf": ("an ELF (Embedded Language Flows) model: flow matching in the embedding space of a frozen text "
            "encoder, the same network decoding the final latents to tokens in one pass"),
    "mdlm": "an MDLM (masked diffusion language model) baseline, trained with the ELF harness",
    "ar": "an autoregressive (next-token) baseline, trained with the ELF harness",
}
_TAGS = {"elf": ["flow-matching", "continuous-diffusion"], "mdlm": ["masked-diffusion"], "ar": ["autoregressive"]}
CITATION = """@article{hu2026elf,
  title   = {Embedded Language Flows},
  author  = {Hu and Qiu and Lu and Zhao and Li and Kim and Andreas and He},
  journal = {arXiv preprint arXiv:2605.10938},
  year    = {2026}
}"""
_FIGURES = ("gen_ppl", "entropy", "bleu", "rouge1", "rouge2", "rougeL")


def training_figures(run_dir: storage.AnyPath | None, step: int | None) -> dict[str, Any]:
    """The newest ``metrics.jsonl`` record at or before ``step`` of the run in ``run_dir``: the
    optimizer steps, tokens, training FLOPs and loss it logs (``{}``: no run, or nothing logged)."""
    if run_dir is None:
        return {}
    records = [r for r in read_records(run_dir) if step is None or r["step"] <= step]
    if not records:
        return {}
    last = records[-1]
    figures = {"train_steps": last["step"]}
    for name in ("tokens", "train_flops", "loss"):
        if isinstance(last.get(name), (int, float)):
            figures[name] = last[name]
    return figures


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _front_matter(record: ExportRecord, license_id: str | None) -> str:
    run = record.run
    lines = ["---", "library_name: elf_eqx", f"license: {license_id or 'other'}", "pipeline_tag: text-generation",
             "tags:", "- elf_eqx", "- jax", "- equinox", *[f"- {t}" for t in _TAGS.get(run.family, [])]]
    if run.distillation is not None:
        lines.append("- distillation")
    data = run.run.data.source
    if is_hub_id(data) and "/" in data and not Path(data).exists():
        lines += ["datasets:", f"- {data}"]
    return "\n".join(lines + ["---", ""])


def _table(rows: Sequence[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _eval_rows(evals: Sequence[EvalRecord], family: Any) -> list[str]:
    if not evals:
        return ["No eval records were found for this run (pass `--eval-results FILE.eval.json` to the export).", ""]
    names = [n for n in _FIGURES if any(n in e.figures for e in evals)]
    lines = ["| eval file | step | samples | sampler | " + " | ".join(names) + " | judge |",
             "|" + "---|" * (len(names) + 5)]
    for e in evals:
        sampler = ""
        if e.settings is not None:
            try:
                sampler = family.sample_tag(family.sampler_settings(e.settings))
            except Exception:  # a record of another family or version: leave it out
                sampler = ""
        figures = " | ".join(_number(e.figures[n]) if n in e.figures else "" for n in names)
        lines.append(f"| `{e.path.name}` | {'' if e.step is None else e.step} | "
                     f"{'' if e.num_samples is None else e.num_samples} | {sampler} | {figures} | {e.judge or ''} |")
    return lines + [""]


def model_card(record: ExportRecord, *, title: str, sample_source: str, source: str, export_command: str,
               evals: Sequence[EvalRecord] = (), license_id: str | None = None) -> str:
    """The ``README.md`` of the export ``record``: ``title`` heads it, ``sample_source`` is how a
    reader names the model (``org/name`` once pushed, else the folder), ``source`` what was
    exported, ``export_command`` the command that exported it, ``evals`` the eval records shown."""
    run, cfg = record.run, record.run.run
    family = run.model_family
    elf, spec = run.architecture, run.data_spec
    preset = preset_name(elf)
    settings = cfg.sampling.settings_for(family)
    prov = record.provenance
    conditional = bool(spec.max_input_length)
    out = [_front_matter(record, license_id), f"# {title}", ""]
    student = ""
    if run.distillation is not None:
        d = run.distillation
        student = (f" It is a **{d.steps}-step student** from progressive distillation (round {d.round}, "
                   f"{d.teacher_steps} → {d.steps} steps on the {d.time_grid} grid, ω {d.omega:g}) of {d.teacher}.")
    out += [f"This is {_FAMILY_TEXT[family.name]}, exported by "
            "elf_eqx (JAX/Equinox) with `python -m elf_eqx.export`." + student, ""]
    out += ["## Model", ""]
    rows = [("family", family.name), ("architecture", f"{preset}: depth {elf.depth}, hidden {elf.hidden_size}, "
                                                       f"{elf.num_heads} heads, vocabulary {elf.vocab_size}"),
            ("parameters", f"{record.parameters:,} ({record.dtype})"),
            ("weights", f"{record.weights} of step {record.step}"),
            ("sequence", f"{spec.max_length} tokens" + (f", condition ≤ {spec.max_input_length} tokens" if conditional
                                                        else ", unconditional") + f", padding: {spec.pad_mode}"),
            ("tokenizer", f"`{run.tokenizer}` (its files are in this folder)")]
    if family.uses_encoder:
        where = (f"bundled in `{record.encoder.bundled}/`" if record.encoder.bundled
                 else "referenced; loaded from the hub when a condition is encoded or the model trained on")
        rows += [("frozen encoder", f"`{record.encoder.source}` ({where})"),
                 ("latents", f"(h − {cfg.data.latent_mean:g}) / {cfg.data.latent_std:g}"),
                 ("flow constants", ", ".join(f"{k} {v:g}" for k, v in cfg.objective.flow.to_dict().items()))]
    if run.converted_from:
        rows.append(("converted from", run.converted_from))
    out += _table(rows) + [""]

    out += ["## Training", ""]
    trows = [("data", f"`{cfg.data.source}` (split `{cfg.data.data_split}`)"),
             ("objective", cfg.objective.family),
             ("optimizer", f"{cfg.optimizer.name}, learning rate {cfg.optimizer.learning_rate:g} "
                           f"({cfg.optimizer.lr_schedule}), global batch {cfg.optimizer.global_batch}, "
                           f"EMA {cfg.optimizer.ema_decay:g}")]
    for name, label in (("train_steps", "optimizer steps"), ("tokens", "tokens seen"),
                        ("train_flops", "training FLOPs (analytic)"), ("loss", "last logged loss")):
        if name in prov:
            trows.append((label, _number(prov[name])))
    if not any(n in prov for n in ("train_steps", "tokens")):
        trows.append(("steps", f"{record.step} (no metrics.jsonl was read with it)"))
    out += _table(trows) + [""]

    out += ["## Sampling", "", f"Default sampler ({family.name}): `{family.sample_tag(settings)}`, "
            + ", ".join(f"{k} {v}" for k, v in settings.to_dict().items()) + ".", "", "```bash",
            "pip install elf_eqx", f"python -m elf_eqx.sample {sample_source}"
            + (" --prompt \"...\"" if conditional else " --num-samples 8 --seed 0"), "```", "", "```python",
            "from elf_eqx import load_model_source",
            f"bundle = load_model_source({sample_source!r})   # the network, tokenizer, encoder and sampler defaults",
            "```", ""]

    out += ["## Evaluation", ""] + _eval_rows(evals, family)

    out += ["## Reproducing", "", "```bash"]
    if run.distillation is not None:
        d = run.distillation
        out += [f"# the teacher: {d.teacher}",
                f"python -m elf_eqx.distill TEACHER --from-steps {d.from_steps} --to-steps {d.steps} "
                f"--time-grid {d.time_grid} --omega {d.omega:g} --cfg-weight {d.cfg_weight:g} "
                f"--decode-share {d.decode_share:g} --steps-per-round {cfg.optimizer.max_steps}"]
    elif run.converted_from:
        out += [f"python -m elf_eqx.convert {run.converted_from.split(' ')[0]} runs/converted"]
    else:
        out += ["python -m elf_eqx.train --config training_config.yaml   # this folder's file: the run's resolved config"]
    out += [export_command, "python -m elf_eqx.eval --samples samples/FILE.jsonl --judge JUDGE", "```", ""]

    out += ["## Files", "", *[f"- `{name}`" for name in (*record.weights_files, "config.json", *record.tokenizer_files)],
            *([f"- `{record.encoder.bundled}/` (the frozen encoder)"] if record.encoder.bundled else []),
            "- `training_config.yaml`", "",
            f"Exported from `{source}` ({record.origin}) with elf_eqx {prov.get('elf_eqx_version', '?')} "
            f"on {prov.get('exported_at', '?')}; `config.json` is format version {record.version}.", ""]
    out += ["## License", "", f"{license_id or 'Not stated by the exporter (license: other).'}", ""]
    out += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(out)
