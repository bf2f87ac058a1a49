"""Save a :class:`~elf_eqx.evaluate.judge.GPT2` as a Hugging Face ``GPT2LMHeadModel`` checkpoint folder
(``config.json`` + ``model.safetensors``), the format :func:`~elf_eqx.evaluate.judge.load_judge` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from elf_eqx.encoders.weights import module_tensors
from elf_eqx.evaluate.judge import GPT2, gpt2_weight_names


def hf_tensors(model: GPT2) -> dict[str, np.ndarray]:
    """The model's weights under ``GPT2LMHeadModel`` names (the loader's table,
    :func:`~elf_eqx.evaluate.judge.gpt2_weight_names`; the LM head is tied to ``wte`` and not stored)."""
    tensors = module_tensors(model, *gpt2_weight_names(model.config))
    return {f"transformer.{name}": np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}


def hf_config(model: GPT2) -> dict:
    """The ``config.json`` of a Hugging Face GPT-2 with ``model``'s shape."""
    c = model.config
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
            "n_positions": c.n_positions, "n_ctx": c.n_positions, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": c.n_inner, "activation_function": c.activation_function,
            "layer_norm_epsilon": c.layer_norm_epsilon, "bos_token_id": c.eos_token_id,
            "eos_token_id": c.eos_token_id, "tie_word_embeddings": True, "resid_pdrop": 0.0,
            "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def save_judge(model: GPT2, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``folder``."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(model), indent=1))
    save_file(hf_tensors(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
