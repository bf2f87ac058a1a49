"""Sharing a trained model: the exported folder (``python -m elf_eqx.export``), Hugging Face's
``save_pretrained`` convention for an elf_eqx model.

A folder (or a hub repo holding one) is::

    config.json                      the export record (record.py): the run record plus what the folder holds
    model.safetensors                the weights, by their checkpoint names (or model-0000i-of-0000n.safetensors
                                     and model.safetensors.index.json above --max-shard-size)
    tokenizer.json, tokenizer_config.json, ...   the tokenizer (save_pretrained's files)
    encoder/                         the frozen encoder, bundled (--bundle-encoder): config.json + model.safetensors
    README.md                        the model card (card.py)
    training_config.yaml             the run's resolved training config (python -m elf_eqx.train --config ...)

- :mod:`~elf_eqx.sharing.record`: :class:`~elf_eqx.sharing.record.ExportRecord`, ``config.json``'s one reader;
- :mod:`~elf_eqx.sharing.folder`: the folder read back into a network (what ``load_model_source`` calls);
- :mod:`~elf_eqx.sharing.sources`: what an export reads a model from, one tensor at a time;
- :mod:`~elf_eqx.sharing.encoder`: the encoder's configuration and its bundled copy;
- :mod:`~elf_eqx.sharing.card`: the model card;
- :mod:`~elf_eqx.sharing.hub`: the Hugging Face hub, down (``snapshot_download``) and up (``upload_folder``);
- :mod:`~elf_eqx.sharing.write`: the export itself.

Paths: the export's output and the folders it reads are local (``os.PathLike``); the export writes
every file into a staging folder beside ``--output`` and renames it into place when complete
(:func:`elf_eqx.sharing.write.export_model`), the one place its destination is touched.
"""
