"""``python -m elf_eqx.eval`` end to end: unconditional samples with a tiny local judge,
conditional samples with references, the output JSON, the no-overwrite rule and one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from metrics_fixtures import write_tiny_judge
from tolerances import reassociation

from elf_eqx.eval import EvalConfig, main
from elf_eqx.evaluate.judge import load_judge, load_judge_tokenizer
from elf_eqx.evaluate import evaluate_unconditional

TEXTS = ["and the lord said unto moses", "in the beginning god created the heaven and the earth", "amen"]
SETTINGS = {"method": "sde", "steps": 8, "gamma": 1.5, "omega": 3.0, "seed": 0}


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    return write_tiny_judge(tmp_path_factory.mktemp("judge"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def samples_file(path, texts=TEXTS, **fields):
    return write_jsonl(path, [{"index": i, "text": t, "token_ids": [1, 2], "settings": SETTINGS, **fields}
                              for i, t in enumerate(texts)])


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    import dataclasses

    for field in dataclasses.fields(EvalConfig):
        if field.name == "processes":  # a section (ProcessFlags): its own fields are the flags
            continue
        assert "--" + field.name.replace("_", "-") in text
    assert "--coordinator-address" in text and "--heartbeat-timeout-s" in text
    assert "MDLM/Duo" in text and "auto (bleu + rouge" in text


def test_unconditional_cli_matches_the_api(judge_dir, tmp_path, capsys):
    samples = samples_file(tmp_path / "s.jsonl")
    main(["--samples", str(samples), "--judge", str(judge_dir), "--batch-size", "2"])
    result = json.loads((tmp_path / "s.jsonl.eval.json").read_text())
    api = evaluate_unconditional(TEXTS, load_judge(judge_dir), load_judge_tokenizer(judge_dir))
    # batches of 2 against the API's default size: another program over the 2-layer judge of width 32
    assert result["gen_ppl"] == pytest.approx(api["gen_ppl"], rel=reassociation(32, layers=4))
    assert result["entropy"] == pytest.approx(api["entropy"])
    assert result["metrics"] == ["gen_ppl", "entropy"] and result["num_samples"] == 3
    assert result["settings"] == SETTINGS and result["judge"] == str(judge_dir) and result["append_eos"] is True
    assert result["samples"] == [{"path": str(samples), "num_records": 3, "settings": [SETTINGS]}]
    printed = capsys.readouterr().out
    assert "gen_ppl" in printed and "wrote" in printed

    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["--samples", str(samples), "--judge", str(judge_dir)])
    main(["--samples", str(samples), "--judge", str(judge_dir), "--overwrite", "--no-append-eos",
          "--max-samples", "2", "--metrics", "gen_ppl", "--judge-dtype", "bfloat16"])
    again = json.loads((tmp_path / "s.jsonl.eval.json").read_text())
    assert again["num_samples"] == 2 and again["append_eos"] is False and "entropy" not in again
    assert again["judge_dtype"] == "bfloat16"


def test_two_files_and_entropy_only(judge_dir, tmp_path):
    first = samples_file(tmp_path / "a.jsonl", TEXTS[:2])
    second = write_jsonl(tmp_path / "b.jsonl", [{"text": TEXTS[2]}, {"text": ""}])
    out = tmp_path / "out" / "e.json"
    main(["--samples", str(first), str(second), "--judge", str(judge_dir), "--metrics", "entropy",
          "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["num_samples"] == 4 and result["num_empty"] == 1 and "gen_ppl" not in result
    assert result["settings"] is None and result["samples"][1]["settings"] == [None]


def test_conditional_cli_with_references(tmp_path):
    samples = samples_file(tmp_path / "cond.jsonl", [t.upper() for t in TEXTS],
                           input="previous verse")
    refs = write_jsonl(tmp_path / "pairs.jsonl", [{"input": "previous verse", "output": t} for t in TEXTS + ["extra"]])
    out = tmp_path / "cond.json"
    main(["--samples", str(samples), "--references", str(refs), "--output", str(out)])
    cond = json.loads(out.read_text())
    assert cond["metrics"] == ["bleu", "rouge"] and "gen_ppl" not in cond
    for name in ("bleu", "rouge1", "rougeL"):
        assert cond[name] == pytest.approx(100.0)
    assert cond["rouge2"] == pytest.approx(200 / 3)  # "amen" has no bigram: rouge-score gives it 0
    assert "case:lc|eff:yes" in cond["bleu_signature"] and cond["references"] == str(refs)

    own = write_jsonl(tmp_path / "own.jsonl", [{"text": "a b c", "reference": "a b d"}, {"text": "x", "reference": "x"}])
    main(["--samples", str(own), "--metrics", "rouge"])
    scored = json.loads((tmp_path / "own.jsonl.eval.json").read_text())
    assert scored["metrics"] == ["rouge"] and "bleu" not in scored and 50 < scored["rouge1"] < 100


def test_errors_are_one_line_naming_the_culprit(judge_dir, tmp_path):
    def fails(args, match):
        with pytest.raises(SystemExit, match=match) as err:
            main(args)
        assert "\n" not in str(err.value.code)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    fails(["--samples", str(bad)], "bad.jsonl:2: not valid JSON")
    fails(["--samples", str(tmp_path / "missing.jsonl")], "--samples file not found: .*missing.jsonl")
    fails(["--samples", str(write_jsonl(tmp_path / "notext.jsonl", [{"text": "a"}, {"txt": "b"}]))],
          "notext.jsonl:2: a sample needs a string 'text'")
    (tmp_path / "empty.jsonl").write_text("\n")
    fails(["--samples", str(tmp_path / "empty.jsonl")], "empty.jsonl: no samples")

    two = write_jsonl(tmp_path / "two.jsonl", [{"text": "a"}, {"text": "b"}])
    short = write_jsonl(tmp_path / "short.jsonl", [{"input": "x", "output": "y"}])
    fails(["--samples", str(two), "--references", str(short)], "has 1 records but there are 2 samples")
    long = write_jsonl(tmp_path / "long.jsonl", [{"input": "x", "output": "y"}] * 3)
    fails(["--samples", str(two), "--references", str(long)], "has 3 records but there are 2 samples")
    shifted = write_jsonl(tmp_path / "shifted.jsonl", [{"text": "a", "input": "p"}, {"text": "b", "input": "q"}])
    fails(["--samples", str(shifted), "--references", str(long)], "shifted.jsonl:1: its input differs")
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"text": "a", "reference": "a"}, {"text": "b"}])
    fails(["--samples", str(partial)], "partial.jsonl:2: no 'reference' field")
    main(["--samples", str(partial), "--metrics", "entropy", "--judge", str(judge_dir)])  # references not needed
    fails(["--samples", str(two), "--metrics", "bleu"], "BLEU/ROUGE need references")
    fails(["--samples", str(two), "--metrics", "auto", "bleu"], "auto cannot be combined")
    fails(["--samples", str(two), "--max-samples", "0"], "--max-samples must be at least 1")

    (tmp_path / "notgpt").mkdir()
    (tmp_path / "notgpt" / "config.json").write_text('{"model_type": "bert"}')
    fails(["--samples", str(two), "--judge", str(tmp_path / "notgpt")], "notgpt: the judge must be a GPT-2")
    fails(["--samples", str(two), "--judge", str(tmp_path / "nowhere")], "no such file or folder")
    (tmp_path / "notok").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(judge_dir / name, tmp_path / "notok" / name)
    fails(["--samples", str(two), "--judge", str(tmp_path / "notok")], "missing tokenizer.json")
    fails(["--samples", str(two), "--output", str(two), "--overwrite"], "is one of the samples files")
    assert [p.name for p in tmp_path.glob("*.eval.json")] == ["partial.jsonl.eval.json"]
    assert not list(tmp_path.glob(".*.tmp"))
