"""The metric functions: entropy by hand, Gen. PPL against torch's GPT-2 on the same scoring rule,
BLEU/ROUGE against hand-checked and library values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from metrics_fixtures import JUDGE_CONTEXT, write_tiny_judge

from elf_eqx.evaluate.judge import GPT2, GPT2Config, load_judge, load_judge_tokenizer
from elf_eqx.evaluate import (
    corpus_bleu,
    corpus_gen_ppl,
    scored_rows,
    evaluate_conditional,
    evaluate_entropy,
    evaluate_unconditional,
    mean_entropy,
    rouge_scores,
    unigram_entropy,
)

pytestmark = pytest.mark.numerics  # compares float computations: .ci/run reruns it with a narrower ISA

LONG = " ".join(["and god saw the light, that it was good"] * 12)  # longer than the judge's context
TEXTS = ["and the lord said unto moses", "in the beginning god created the heaven and the earth",
         "amen<|endoftext|>and it was so", LONG, ""]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    return write_tiny_judge(tmp_path_factory.mktemp("judge"))


def torch_gen_ppl(folder, texts, append_eos):
    """The Gen. PPL rule written directly against transformers' GPT2LMHeadModel."""
    tok = load_judge_tokenizer(folder)
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    eos = tok.eos_token_id
    total, count = 0.0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"] + ([eos] if append_eos else [])
        ids = ids[:JUDGE_CONTEXT]
        if len(ids) < 2:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        seen_eos = eos in ids[:1]
        for i, token in enumerate(ids[1:]):
            if token != eos or not seen_eos:
                total, count = total + float(nll[i]), count + 1
            seen_eos = seen_eos or token == eos
    return math.exp(total / count), count


def test_entropy_by_hand():
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy([5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 1, 2]) == pytest.approx(math.log(2))
    assert unigram_entropy([1, 2, 3, 3]) == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    assert unigram_entropy(list(range(8))) == pytest.approx(math.log(8))  # nats, not bits
    mean, empty = mean_entropy([[1, 2], [], [7]])
    assert mean == pytest.approx(math.log(2) / 2) and empty == 1
    mean, empty = mean_entropy([[], []])
    assert math.isnan(mean) and empty == 2


@pytest.mark.parametrize("append_eos", [True, False])
def test_gen_ppl_matches_torch(judge_dir, append_eos):
    judge, tok = load_judge(judge_dir), load_judge_tokenizer(judge_dir)
    expected, count = torch_gen_ppl(judge_dir, TEXTS, append_eos)
    got = evaluate_unconditional(TEXTS, judge, tok, batch_size=2, append_eos=append_eos)
    assert got["gen_ppl"] == pytest.approx(expected, rel=1e-5)
    assert got["num_scored_tokens"] == count
    assert got["num_samples"] == 5 and got["num_empty"] == 1 and got["num_truncated"] == 1
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert got["num_tokens"] == sum(map(len, rows))
    assert got["entropy"] == pytest.approx(np.mean([unigram_entropy(r) for r in rows if r]))
    assert evaluate_entropy(TEXTS, tok) == {"entropy": got["entropy"], "num_samples": 5, "num_empty": 1,
                                            "num_tokens": got["num_tokens"]}


def test_gen_ppl_in_bf16_and_with_nothing_scored(judge_dir):
    judge, tok = load_judge(judge_dir), load_judge_tokenizer(judge_dir)
    reference, _ = torch_gen_ppl(judge_dir, TEXTS, True)
    rows = scored_rows([tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS], eos_id=tok.eos_token_id,
                       max_length=JUDGE_CONTEXT)
    bf16 = corpus_gen_ppl(judge, rows, eos_id=tok.eos_token_id, batch_size=4, compute_dtype=jnp.bfloat16)
    assert bf16.gen_ppl == pytest.approx(reference, rel=2e-2)
    assert math.isnan(corpus_gen_ppl(judge, [[], [tok.eos_token_id]], eos_id=tok.eos_token_id).gen_ppl)


def test_gen_ppl_refuses_a_mismatched_tokenizer(judge_dir):
    judge, tok = load_judge(judge_dir), load_judge_tokenizer(judge_dir)
    small = GPT2(GPT2Config(vocab_size=10, n_positions=JUDGE_CONTEXT, n_embd=8, n_layer=1, n_head=2),
                 key=jax.random.key(0))
    with pytest.raises(ValueError, match="do not belong together"):
        evaluate_unconditional(TEXTS[:2], small, tok)
    with pytest.raises(ValueError, match="no samples"):
        evaluate_unconditional([], judge, tok)


def test_bleu_by_hand_and_against_sacrebleu():
    import sacrebleu

    assert corpus_bleu(["The cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["a b c d"], ["w x y z"]) == pytest.approx(0.0, abs=1e-9)
    # 2 words, unigram precision 1, no bigram match... effective order keeps only the unigram: BLEU = BP·1.
    assert corpus_bleu(["the cat"], ["The dog the cat"]) == pytest.approx(100 * math.exp(1 - 4 / 2))
    hyps = ["the cat is on the mat", "there is a dog in the garden"]
    refs = ["The cat sat on the mat", "A dog is in the garden"]
    direct = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True, use_effective_order=True).score
    assert corpus_bleu(hyps, refs) == pytest.approx(direct)


def test_rouge_by_hand_and_perfect_match():
    scores = rouge_scores(["the cats were sitting"], ["the cat sat"])
    assert scores["rouge1"] == pytest.approx(100 * 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))  # stemming: cats → cat
    assert scores["rouge2"] == pytest.approx(40.0)  # "the cat" of {the cat, cat were, were sit} vs {the cat, cat sat}
    assert rouge_scores(["A b c", "x y"], ["a b c", "w z"]) == pytest.approx(
        {"rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0})
    figures = evaluate_conditional(["Hello world again"], ["hello world again"])
    assert figures == pytest.approx({"bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0,
                                     "num_samples": 1})
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_bleu([], [])
