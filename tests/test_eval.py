"""Metrics and ``python -m elf_eqx.eval``: entropy by hand, Gen. PPL against torch's GPT-2 on the
same scoring rule, BLEU/ROUGE, and the CLI's outputs and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers

from elf_eqx.eval import main
from elf_eqx.judge import load_judge, load_judge_tokenizer
from elf_eqx.judge.bpe_tokenizer import train_bpe_tokenizer
from elf_eqx.metrics import corpus_bleu, evaluate_unconditional, mean_entropy, rouge_scores, unigram_entropy

TEXTS = ["and the lord said unto moses", "in the beginning god created the heaven and the earth", "amen"]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, shared_dir):
    """A tiny random GPT-2 with a BPE tokenizer trained on a few KJV chapters."""
    folder = tmp_path_factory.mktemp("judge")
    lines = (shared_dir / "data" / "kjv" / "valid.jsonl").read_text().splitlines()[:5]
    train_bpe_tokenizer([json.loads(line)["text"].lower() for line in lines], 400, folder)
    tok = load_judge_tokenizer(folder)
    config = transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return folder


def test_entropy_by_hand():
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy([5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 1, 2]) == pytest.approx(math.log(2))
    assert unigram_entropy([1, 2, 3, 3]) == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    mean, empty = mean_entropy([[1, 2], [], [7]])
    assert mean == pytest.approx(math.log(2) / 2) and empty == 1


def test_gen_ppl_matches_torch(judge_dir):
    judge, tok = load_judge(judge_dir), load_judge_tokenizer(judge_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(judge_dir).eval()
    total, count = 0.0, 0
    for text in TEXTS:  # each text then one EOS; tokens 1.. are scored, the EOS included
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")
        total, count = total + float(nll), count + len(ids) - 1
    got = evaluate_unconditional(TEXTS, judge, tok, batch_size=2)
    assert got["gen_ppl"] == pytest.approx(math.exp(total / count), rel=1e-4)
    assert got["num_samples"] == 3 and got["num_empty"] == 0
    without = evaluate_unconditional(TEXTS, judge, tok, append_eos=False)
    assert without["gen_ppl"] != pytest.approx(got["gen_ppl"])


def test_bleu_and_rouge():
    assert corpus_bleu(["The cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["a b c d"], ["w x y z"]) == pytest.approx(0.0, abs=1e-6)
    scores = rouge_scores(["the cats were sitting"], ["the cat sat"])
    assert scores["rouge1"] == pytest.approx(100 * 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))  # stemming: cats → cat
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        rouge_scores(["a", "b"], ["a"])


def write_samples(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_eval_cli_unconditional_and_conditional(judge_dir, tmp_path, capsys):
    samples = write_samples(tmp_path / "s.jsonl", [{"text": t, "token_ids": [], "settings": {"steps": 8}} for t in TEXTS])
    main(["--samples", str(samples), "--judge", str(judge_dir)])
    result = json.loads((tmp_path / "s.jsonl.eval.json").read_text())
    assert result["num_samples"] == 3 and result["gen_ppl"] > 1 and result["settings"] == {"steps": 8}
    assert "gen_ppl" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["--samples", str(samples), "--judge", str(judge_dir)])

    refs = write_samples(tmp_path / "pairs.jsonl", [{"input": "x", "output": t} for t in TEXTS])
    out = tmp_path / "cond.json"
    main(["--samples", str(samples), "--references", str(refs), "--output", str(out)])
    cond = json.loads(out.read_text())
    assert cond["bleu"] == pytest.approx(100.0) and cond["rougeL"] == pytest.approx(100.0) and "gen_ppl" not in cond
    own = write_samples(tmp_path / "own.jsonl", [{"text": "a b", "reference": "a b"}])
    main(["--samples", str(own), "--metrics", "all", "--judge", str(judge_dir)])
    both = json.loads((tmp_path / "own.jsonl.eval.json").read_text())
    assert "bleu" in both and "gen_ppl" in both


def test_eval_cli_errors_name_the_file(judge_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(SystemExit, match="bad.jsonl:2"):
        main(["--samples", str(bad)])
    with pytest.raises(SystemExit, match="not found"):
        main(["--samples", str(tmp_path / "missing.jsonl")])
    short = write_samples(tmp_path / "short.jsonl", [{"input": "x", "output": "y"}])
    samples = write_samples(tmp_path / "two.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(SystemExit, match="1 records but there are 2 samples"):
        main(["--samples", str(samples), "--references", str(short)])
    with pytest.raises(SystemExit, match="need references"):
        main(["--samples", str(samples), "--metrics", "overlap", "--output", str(tmp_path / "o.json")])
    (tmp_path / "notgpt").mkdir()
    (tmp_path / "notgpt" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(SystemExit, match="must be a GPT-2"):
        main(["--samples", str(samples), "--judge", str(tmp_path / "notgpt"), "--output", str(tmp_path / "p.json")])
    assert not np.any([p.name.endswith(".tmp") for p in tmp_path.iterdir()])
