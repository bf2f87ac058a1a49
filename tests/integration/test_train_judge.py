"""The offline judge trainer: export to Hugging Face GPT-2 files (read back exactly by
``load_judge`` and by torch), training that lowers the loss deterministically, the staged output
folder, text normalisation, and ``benchmarks/train_judge.py`` end to end on a tiny corpus."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from elf_eqx.encoders import load_tokenizer
from elf_eqx.evaluate import evaluate_unconditional
from elf_eqx.evaluate.judge import load_judge, load_judge_tokenizer
from elf_eqx.io.atomic import staged_folder
from judge.export import hf_config, hf_tensors, save_judge
from elf_eqx.evaluate.judge import GPT2, GPT2Config
from judge.lm_training import batch_rows, block_perplexity, pack_blocks, train_lm
from judge.text_normalisation import normalise_texts

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_judge.py"
TINY = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, eos_token_id=3)


def _script():
    spec = importlib.util.spec_from_file_location("train_judge", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_judge"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _random_judge(seed: int = 0) -> GPT2:
    """A tiny GPT-2 whose every leaf (norms and biases included) is random, so a misplaced or
    transposed tensor cannot go unnoticed."""
    model = GPT2(TINY, key=jax.random.key(seed))
    leaves, treedef = jax.tree_util.tree_flatten(eqx.filter(model, eqx.is_array))
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, noisy), model)


def test_export_matches_gpt2lmheadmodel_names_and_layouts():
    ours = hf_tensors(_random_judge())
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_config(_random_judge())))
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()
              if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert {k: v.shape for k, v in ours.items()} == theirs
    assert ours["transformer.h.0.mlp.c_fc.weight"].shape == (16, 64)  # Conv1D: (in, out)


def test_saved_judge_loads_back_exactly_and_matches_torch(tmp_path):
    model = _random_judge()
    save_judge(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] and config["activation_function"] == "gelu_new"
    assert config["eos_token_id"] == config["bos_token_id"] == 3
    loaded = load_judge(tmp_path)
    assert loaded.config == model.config
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(model)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ids = np.random.default_rng(0).integers(0, TINY.vocab_size, (2, 12))
    ours = np.asarray(model(jnp.asarray(ids, jnp.int32)))
    torch_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)  # fidelity to the Hugging Face model (torch)


def test_pack_blocks_separates_documents_by_eos():
    blocks = pack_blocks([[5, 6], [7], [8, 9, 10]], eos_id=3, block_size=4)
    np.testing.assert_array_equal(blocks, [[5, 6, 3, 7], [3, 8, 9, 10]])  # the tail EOS is dropped
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks([[5]], 3, 8)


def test_batches_cover_every_row_once_per_epoch():
    key = jax.random.key(0)
    epoch = np.concatenate([batch_rows(key, 10, 3, step) for step in range(3)])
    assert len(set(epoch.tolist())) == 9  # 3 full batches of 10 rows; one row waits
    np.testing.assert_array_equal(batch_rows(key, 10, 3, 1), batch_rows(key, 10, 3, 1))
    assert not np.array_equal(batch_rows(key, 10, 3, 0), batch_rows(key, 10, 3, 3))  # a new epoch reshuffles


def test_training_lowers_the_loss_is_deterministic_and_validates_periodically():
    docs = [[4 + (i + j) % 9 for j in range(14)] for i in range(24)]
    blocks = pack_blocks(docs, TINY.eos_token_id, 16)
    initial = GPT2(TINY, key=jax.random.key(0))
    before = block_perplexity(initial, blocks)
    evals: list[tuple[int, float]] = []
    run = lambda on_eval=None: train_lm(initial, blocks, steps=30, batch_size=4, learning_rate=1e-2,  # noqa: E731
                                        key=jax.random.key(1), warmup=3, valid_blocks=blocks[:4],
                                        eval_every=10, on_eval=on_eval)
    trained = run(lambda step, ppl: evals.append((step, ppl)))
    assert block_perplexity(trained, blocks) < before / 2
    assert [s for s, _ in evals] == [10, 20, 30] and evals[-1][1] < evals[0][1]
    again = run()
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_staged_folder_refuses_to_overwrite_and_cleans_up_a_failed_run(tmp_path):
    out = tmp_path / "judge"
    with staged_folder(out) as staging:
        (staging / "a").write_text("1")
        assert not out.exists()
    assert (out / "a").read_text() == "1"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with staged_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with staged_folder(out, overwrite=True) as staging:
            (staging / "b").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge"] and (out / "a").exists()
    with staged_folder(out, overwrite=True) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_normalisation_matches_the_uncased_minilm_decoder():
    minilm = load_tokenizer("offline-minilm")
    texts = ["And God said, Let there be Light.", "   "]
    assert normalise_texts(texts, lowercase=True) == ["and god said, let there be light."]
    roundtripped = normalise_texts(texts, roundtrip=minilm)
    ids = minilm(texts[0], add_special_tokens=False)["input_ids"]
    assert roundtripped == [minilm.decode(ids, skip_special_tokens=True)]
    assert roundtripped[0] == roundtripped[0].lower()


def test_cli_writes_a_loadable_judge_and_refuses_to_overwrite(tmp_path, shared_dir):
    corpus = tmp_path / "chapters.jsonl"
    corpus.write_text("\n".join((shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:6]) + "\n")
    out = tmp_path / "judges" / "kjv"
    args = ["--train", str(corpus), "--valid", str(corpus), "--output", str(out), "--lowercase",
            "--vocab-size", "320", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-positions", "32",
            "--block-size", "32", "--batch-size", "4", "--steps", "6", "--lr", "3e-3", "--eval-every", "3"]
    _script().main(args)
    record = json.loads((out / "judge_training.json").read_text())
    assert record["options"]["lowercase"] and record["options"]["steps"] == 6
    assert [p["step"] for p in record["valid_curve"]] == [3, 6]
    tok = load_judge_tokenizer(out)
    judge = load_judge(out)
    assert judge.config.vocab_size == len(tok) == 320 and judge.config.eos_token_id == tok.eos_token_id
    assert 1 < record["valid_block_ppl"] < 320 and 1 < record["valid_gen_ppl"] < 320
    texts = [json.loads(line)["text"].lower() for line in corpus.read_text().splitlines()]
    again = evaluate_unconditional(texts, judge, tok, max_length=32)
    # the training script's validation batches against evaluate's: another program over the judge
    assert again["gen_ppl"] == pytest.approx(record["valid_gen_ppl"], rel=1e-5)
    assert again["num_scored_tokens"] == record["valid_scored_tokens"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["kjv"]
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        _script().main(args)
