"""``python -m elf_eqx.export``: a run (ELF, MDLM, AR, a distilled student) written as a Hugging
Face-style folder samples the same tokens as the run itself; the folder loads from a path and, offline,
from a populated hub cache (``org/name``, ``--revision``); ``--push-to-hub`` sends the folder in one
commit (the upload call stubbed: no network here); ``train --init-from`` and ``distill`` start from
an exported folder; bad folders are one line each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from run_fixtures import write_run

from elf_eqx.export import main as export_main
from elf_eqx.io.safetensors_io import INDEX_NAME, SafetensorsFolder
from elf_eqx.release.model_source import load_model_source
from elf_eqx.sample import main as sample_main
from elf_eqx.sharing.record import EXPORT_FORMAT_VERSION, read_export_record
from elf_eqx.training.config import TrainConfig
from elf_eqx.training.run_directory import load_model_from_checkpoint, read_run_record

SETTINGS = ("tokenizer", "latent_mean", "latent_std", "layout", "flow",
            "sampling", "step", "family", "distillation")
DRAW = ["--num-samples", "4", "--batch-size", "2", "--quiet"]
REPO = Path(__file__).resolve().parents[2]


def tokens(path: Path) -> list[list[int]]:
    return [json.loads(line)["token_ids"] for line in path.read_text().splitlines()]


def sample_tokens(source: str | Path, out: Path, *extra: str) -> list[list[int]]:
    sample_main([str(source), *DRAW, "--output", str(out), *extra])
    return tokens(out)


def leaves(model) -> dict[str, np.ndarray]:
    from elf_eqx.training.state_tree import named_leaves

    return {".".join(names): np.asarray(leaf) for names, leaf in named_leaves(model)}


def assert_same_weights(a, b) -> None:
    x, y = leaves(a), leaves(b)
    assert x.keys() == y.keys()
    for name in x:
        assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name]), name


@pytest.fixture(scope="module")
def elf_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("elf") / "run", conditional=False)


@pytest.fixture(scope="module")
def exported(elf_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "elf-t"
    export_main([str(elf_run), "--output", str(out), "--license", "apache-2.0"])
    return out


def test_an_exported_run_is_a_hub_folder_that_samples_the_same_tokens(elf_run, exported, tmp_path):
    files = {p.name for p in exported.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "training_config.yaml", "tokenizer.json",
            "tokenizer_config.json"} <= files
    # The weights are plain safetensors: the safetensors library reads them, bitwise the run's EMA.
    from safetensors import safe_open

    ema = leaves(load_model_from_checkpoint(elf_run))
    with safe_open(str(exported / "model.safetensors"), framework="numpy") as f:
        assert set(f.keys()) == set(ema)
        for name in f.keys():
            assert np.array_equal(f.get_tensor(name), ema[name]), name
    # config.json is the run record (read by one reader) and what the folder holds.
    config = json.loads((exported / "config.json").read_text())
    assert (config["format"], config["format_version"], config["family"]) == ("elf_eqx", EXPORT_FORMAT_VERSION, "elf")
    record, export = read_run_record(elf_run)[0], read_export_record(exported)
    assert export.run == record and export.weights == "ema" and export.step == 7
    assert export.encoder.source == "offline-minilm" and export.encoder.bundled is None
    assert export.encoder.config["model_type"] == "bert" and export.parameters == sum(v.size for v in ema.values())
    # training_config.yaml is the run's resolved config, readable by train --config
    training = yaml.safe_load((exported / "training_config.yaml").read_text())
    assert TrainConfig.from_dict(training) == record.run
    card = (exported / "README.md").read_text()
    for part in ("library_name: elf_eqx", "license: apache-2.0", "## Training", "## Sampling", "sde4-w3",
                 "## Evaluation", "## Reproducing", "python -m elf_eqx.train --config training_config.yaml",
                 "## Citation", "arXiv:2605.10938"):
        assert part in card, part

    run_bundle, folder_bundle = load_model_source(str(elf_run)), load_model_source(str(exported))
    assert folder_bundle.kind == "export" and folder_bundle.record == record
    assert {f: getattr(folder_bundle, f) for f in SETTINGS if f != "tokenizer"} == {
        f: getattr(run_bundle, f) for f in SETTINGS if f != "tokenizer"}
    assert folder_bundle.tokenizer == str(exported.absolute()) and folder_bundle.encoder == "offline-minilm"
    assert_same_weights(folder_bundle.model, run_bundle.model)
    assert sample_tokens(exported, tmp_path / "b.jsonl") == sample_tokens(elf_run, tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="holds the ema weights only"):
        load_model_source(str(exported), weights="raw")


def test_raw_weights_shards_and_a_bundled_encoder_of_a_conditional_run(tmp_path):
    run = write_run(tmp_path / "cond", conditional=True)
    out = tmp_path / "cond-export"
    export_main([str(run), "--output", str(out), "--weights", "raw", "--bundle-encoder", "--max-shard-size", "4MB"])
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / INDEX_NAME).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for shard in SafetensorsFolder(out).files:  # at most 4 MB of tensors, or one tensor larger than that
        assert sum(t.nbytes for t in shard.info().values()) <= 4e6 or len(shard.info()) == 1
    assert (out / "encoder" / "config.json").is_file() and (out / "encoder" / "model.safetensors").is_file()
    export = read_export_record(out)
    assert export.weights == "raw" and export.encoder.bundled == "encoder" and export.encoder.source == "offline-minilm"
    bundle = load_model_source(str(out), weights="raw")
    assert bundle.encoder == str((out / "encoder").absolute())
    assert_same_weights(bundle.model, load_model_from_checkpoint(run, "model"))
    prompts = ["--prompt", "In the beginning", "--prompt", "And God said"]
    draw = ["--batch-size", "2", "--quiet", "--weights", "raw", *prompts]
    sample_main([str(run), *draw, "--output", str(tmp_path / "a.jsonl")])
    sample_main([str(out), *draw, "--output", str(tmp_path / "b.jsonl")])
    assert tokens(tmp_path / "b.jsonl") == tokens(tmp_path / "a.jsonl")


@pytest.mark.parametrize("family", ["mdlm", "ar"])
def test_baseline_runs_export_and_sample_the_same_tokens(baseline_runs, family, tmp_path):
    out = tmp_path / family
    export_main([str(baseline_runs[family]), "--output", str(out)])
    export = read_export_record(out)
    assert export.run.family == family and export.encoder.source is None  # the baselines read tokens
    assert export.provenance["train_steps"] == 2 and export.provenance["tokens"] == 2 * 4 * 16
    assert "training FLOPs" in (out / "README.md").read_text()
    assert sample_tokens(out, tmp_path / "b.jsonl") == sample_tokens(baseline_runs[family], tmp_path / "a.jsonl")


@pytest.mark.slow
def test_a_distilled_student_exports_and_distillation_and_init_from_take_an_export(exported, tmp_path):
    from elf_eqx.distill import main as distill_main
    from elf_eqx.train import main as train_main

    # distill takes the exported folder as its teacher, like the run it came from
    students = tmp_path / "students"
    distill_main([str(exported), "--from-steps", "4", "--to-steps", "2", "--steps-per-round", "2", "--global-batch",
                  "4", "--save-every", "2", "--log-every", "1", "--samples-every", "2", "--num-samples", "2",
                  "--warmup-steps", "1", "--output-dir", str(students), "--cache-dir", str(tmp_path / "cache")])
    student = tmp_path / "student"
    export_main([str(students), "--output", str(student)])  # the distillation's folder: its newest student
    export = read_export_record(student)
    assert export.run.distillation.steps == 2 and export.run.run.sampling.steps == 2
    assert "2-step student" in (student / "README.md").read_text()
    assert sample_tokens(student, tmp_path / "b.jsonl") == sample_tokens(students, tmp_path / "a.jsonl")

    # train --init-from: a learning rate of 0 keeps the weights the run starts from
    run = tmp_path / "continued"
    train_main(["--model", "ELF-T", "--encoder", "offline-minilm", "--data", "embedded", "--max-length", "16",
                "--latent-std", "0.28", "--global-batch", "4", "--max-steps", "1", "--blr", "0", "--warmup-steps", "0",
                "--save-every", "1", "--sampling.every", "5", "--cache-dir", str(tmp_path / "cache"),
                "--output-dir", str(run), "--init-from", str(exported)])
    assert_same_weights(load_model_from_checkpoint(run, "model"), load_model_source(str(exported)).model)
    assert read_run_record(run)[0].run.init.init_from == str(exported)
    with pytest.raises(SystemExit, match=r"does not fit this run's network \(ELF-XS\): depth 2 vs 4"):
        train_main(["--model", "ELF-XS", "--encoder", "offline-minilm", "--data", "embedded", "--max-length", "16",
                    "--global-batch", "4", "--max-steps", "1", "--cache-dir", str(tmp_path / "cache"),
                    "--output-dir", str(tmp_path / "misfit"), "--init-from", str(exported)])


# -- the hub ---------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache: Path, repo: str, folder: Path, revision: str = "main") -> Path:
    """A Hugging Face hub cache holding ``folder`` as repo ``repo`` at commit :data:`COMMIT`, with
    the branch ``revision`` pointing at it (what ``snapshot_download`` leaves behind)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(COMMIT)
    shutil.copytree(folder, root / "snapshots" / COMMIT)
    return root


def test_a_hub_id_resolves_offline_from_the_cache(exported, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    populate_hub_cache(cache, "someone/elf-t", exported, revision="v1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest: no network
    bundle = load_model_source("someone/elf-t", revision="v1")
    assert bundle.kind == "export" and bundle.origin.startswith("someone/elf-t@v1 (exported ema weights, step 7")
    assert_same_weights(bundle.model, load_model_source(str(exported)).model)
    assert load_model_source("someone/elf-t", revision=COMMIT).step == 7
    with pytest.raises(FileNotFoundError, match="model source not found: someone/elf-t"):
        load_model_source("someone/elf-t")  # no main branch in the cache: offline, nothing to fetch
    # A dry run (--dry-run --target) reads the hub export's architecture from its config.json alone.
    from elf_eqx.aot.sample_plan import source_architecture

    on_hub, local = source_architecture("someone/elf-t", revision="v1"), source_architecture(str(exported))
    assert (on_hub.family, on_hub.elf_config, on_hub.data_spec, on_hub.sampling) == (
        local.family, local.elf_config, local.data_spec, local.sampling)

    # The command line, in a fresh process: HF_HUB_OFFLINE=1 and the cache above.
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "hub.jsonl"
    done = subprocess.run([sys.executable, "-m", "elf_eqx.sample", "someone/elf-t", "--revision", "v1", *DRAW,
                           "--output", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert tokens(out) == sample_tokens(exported, tmp_path / "folder.jsonl")


class FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: records the calls, sends nothing."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def create_branch(self, **kwargs):
        self.calls.append(("create_branch", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        return "https://huggingface.co/me/elf-t/commit/abc"


def test_push_to_hub_sends_the_folder_in_one_commit(elf_run, tmp_path, monkeypatch, capsys):
    import elf_eqx.sharing.hub as hub

    fake = FakeHub()
    monkeypatch.setattr(hub, "hub_api", lambda: fake)
    out = tmp_path / "pushed"
    export_main([str(elf_run), "--output", str(out), "--push-to-hub", "me/elf-t", "--private", "--revision", "dev"])
    assert [name for name, _ in fake.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert fake.calls[0][1] == {"repo_id": "me/elf-t", "repo_type": "model", "private": True, "exist_ok": True}
    assert fake.calls[1][1]["branch"] == "dev"
    upload = fake.calls[2][1]
    assert upload["folder_path"] == str(out) and upload["repo_id"] == "me/elf-t" and upload["revision"] == "dev"
    assert upload["commit_message"].startswith("Upload ELF ELF-T (ema weights, step 7) exported by elf_eqx")
    assert fake.uploaded == sorted(["README.md", "config.json", "model.safetensors", "tokenizer.json",
                                    "tokenizer_config.json", "training_config.yaml"])
    assert "python -m elf_eqx.sample me/elf-t" in (out / "README.md").read_text()
    assert "pushed to https://huggingface.co/me/elf-t (branch dev)" in capsys.readouterr().out

    def refusing():
        class Refusing(FakeHub):
            def upload_folder(self, **kwargs):
                raise OSError("401 Unauthorized")
        return Refusing()

    monkeypatch.setattr(hub, "hub_api", refusing)
    with pytest.raises(SystemExit, match=r"could not push .* \(OSError: 401 Unauthorized\); the exported folder is kept"):
        export_main([str(elf_run), "--output", str(tmp_path / "kept"), "--push-to-hub", "me/elf-t"])
    assert (tmp_path / "kept" / "config.json").is_file()


# -- bad input -------------------------------------------------------------------------------


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        sample_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_folders_are_one_line_each(exported, tmp_path, capsys):
    out = ["--output", str(tmp_path / "s.jsonl"), "--quiet"]
    no_config = tmp_path / "no_config"
    shutil.copytree(exported, no_config)
    (no_config / "config.json").unlink()
    assert "holds safetensors weights but no config.json" in one_line_error(capsys, [str(no_config), *out])

    def edited(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(exported, folder)
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    newer = edited("newer", lambda c: c.update(format_version=EXPORT_FORMAT_VERSION + 1))
    line = one_line_error(capsys, [str(newer), *out])
    assert f"format version {EXPORT_FORMAT_VERSION + 1}, newer than this elf_eqx reads (version {EXPORT_FORMAT_VERSION})" in line
    deeper = edited("deeper", lambda c: c["elf"].update(depth=3))
    line = one_line_error(capsys, [str(deeper), *out])
    assert "the weights do not fit its config.json" in line and "blocks.attn.qkv.weight: weights [2," in line

    from elf_eqx.encoders.load import load_tokenizer

    other_tokenizer = tmp_path / "tokenizer"
    shutil.copytree(exported, other_tokenizer)
    tok = load_tokenizer(str(exported))
    tok.add_tokens(["<an-extra-token>"])
    tok.save_pretrained(str(other_tokenizer))
    line = one_line_error(capsys, [str(other_tokenizer), *out])
    assert "the tokenizer" in line and "does not match the model" in line and "ids 30523 vs the model's 30522" in line

    not_ours = edited("not_ours", lambda c: c.update(format="transformers"))
    assert "is not an elf_eqx export" in one_line_error(capsys, [str(not_ours), *out])


def test_export_refuses_what_it_cannot_share(elf_run, exported, tmp_path, capsys):
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        export_main([str(elf_run), "--output", str(exported)])
    with pytest.raises(SystemExit, match="is not a size"):
        export_main([str(elf_run), "--output", str(tmp_path / "x"), "--max-shard-size", "big"])
    with pytest.raises(SystemExit, match="--private and --revision say how to push"):
        export_main([str(elf_run), "--output", str(tmp_path / "x"), "--private"])
    local = tmp_path / "local_encoder"
    shutil.copytree(elf_run, local)
    step = local / "checkpoints" / "7"
    from run_fixtures import store_old_run_config

    stored = json.loads((step / "meta" / "metadata").read_text())["run_config"]
    from elf_eqx.encoders.sources import offline_minilm_dir

    store_old_run_config(step, {**stored, "encoder": str(offline_minilm_dir())})
    with pytest.raises(SystemExit, match="is a local file or folder that another machine does not have"):
        export_main([str(local), "--output", str(tmp_path / "y")])
    assert not (tmp_path / "y").exists()
    export_main([str(local), "--output", str(tmp_path / "y"), "--encoder", "offline-minilm"])
    assert read_export_record(tmp_path / "y").encoder.source == "offline-minilm"


def test_the_model_card_shows_the_runs_eval_records_with_their_judge(elf_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(elf_run, run)
    settings = {"family": "elf", "method": "sde", "steps": 4, "omega": 3.0, "gamma": 1.5, "step": 7}
    found = {"metrics": ["gen_ppl", "entropy"], "num_samples": 64, "settings": settings, "gen_ppl": 123.45,
             "entropy": 2.5, "judge": "runs/kjv_judge_8k"}
    (run / "samples").mkdir()
    (run / "samples" / "run-sde4.jsonl.eval.json").write_text(json.dumps(found))
    given = tmp_path / "bleu.eval.json"
    given.write_text(json.dumps({"metrics": ["bleu"], "num_samples": 8, "settings": None, "bleu": 12.5}))
    export_main([str(run), "--output", str(tmp_path / "out"), "--eval-results", str(given)])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| eval file | step | samples | sampler | gen_ppl | entropy | bleu | judge |" in card
    assert "| `run-sde4.jsonl.eval.json` | 7 | 64 | sde4-w3 | 123.5 | 2.5 |  | runs/kjv_judge_8k |" in card
    assert "| `bleu.eval.json` |  | 8 |  |  |  | 12.5 |  |" in card
    with pytest.raises(SystemExit, match="is not a python -m elf_eqx.eval result file"):
        export_main([str(run), "--output", str(tmp_path / "x"), "--eval-results", str(run / "config.json")])
