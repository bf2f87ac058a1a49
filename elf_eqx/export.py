"""``python -m elf_eqx.export``: share a trained model as a Hugging Face-style folder.

    python -m elf_eqx.export runs/quickstart --output exports/quickstart
    python -m elf_eqx.export runs/kjv_students --output exports/kjv-4step --bundle-encoder
    python -m elf_eqx.export runs/elf_m --output exports/elf-m --push-to-hub my-org/elf-m-owt --private

Writes ``model.safetensors`` (sharded above ``--max-shard-size``, with its index), ``config.json``
(the model's run record and what the folder holds, versioned: :mod:`elf_eqx.sharing.record`), the
tokenizer's files, the frozen encoder (a hub reference, or ``--bundle-encoder``: a copy in
``encoder/``), ``training_config.yaml`` and a model card ``README.md``. ``sample``, ``distill``,
``train --init-from``, ``convert`` and ``load_model_source`` read the folder, or the hub repo it is
pushed to (``org/name``, ``--revision``). A run's weights are read one tensor at a time: exporting a
sharded run never holds the whole model in memory. Nothing existing is overwritten without
``--overwrite``.
"""

from __future__ import annotations

import tyro

from elf_eqx.cli.errors import cli_main, flag_errors
from elf_eqx.sharing.write import ExportConfig, export_model


@cli_main
def main(argv: list[str]) -> None:
    """CLI entry; expected failures end as one line (exit 2, see :mod:`elf_eqx.cli.errors`;
    ``--debug`` shows the traceback)."""
    with flag_errors():
        cfg = tyro.cli(ExportConfig, args=argv, description=__doc__)
    result = export_model(cfg)
    print(f"wrote {result.folder} ({len(result.files)} files, {result.size / 1e6:,.1f} MB): {result.record.origin}")
    if result.pushed is not None:
        where = f" (branch {result.pushed.revision})" if result.pushed.revision else ""
        print(f"pushed to https://huggingface.co/{result.pushed.repo}{where}" + (
            f": {result.pushed.url}" if result.pushed.url else ""))


if __name__ == "__main__":
    main()
