"""The launch recipes (launch/): each names its slice consistently (hosts, chips per host, topology,
processes), states its exact ``--dry-run --target`` command, and that command, with the recipe's
own training arguments on a tiny model (ELF-T, 32 tokens, the offline MiniLM encoder), compiles for
its target and fits without reading data or writing anything. The XPK, JobSet and queued-resources
recipes run the same program (their arguments differ only in the restart and timeout flags, which
never reach it), so it is compiled once for the three."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from elf_eqx.aot.devices import has_cuda_plugin
from elf_eqx.aot.targets import parse_target
from elf_eqx.training.config import parse_train_config

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
RECIPES = ("xpk_v5p64.sh", "jobset_v5p64.yaml", "queued_resources_v5p64.sh", "slurm_h100_2x8.sbatch")
TINY = ["--model", "ELF-T", "--max-length", "32", "--encoder", "offline-minilm", "--data", "/no/such/data.jsonl",
        "--no-estimate"]
_DRY = re.compile(r"python -m elf_eqx\.train (.+?) --dry-run --target (\S+)")
_compiled: dict[tuple, dict] = {}


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    text: str
    args: list[str]
    """The training arguments, as the recipe runs them (its bucket left as written)."""
    target: str

    def args_in(self, where: Path) -> list[str]:
        """The arguments with the recipe's bucket replaced by the local folder ``where``."""
        return [re.sub(r"^(\$\{BUCKET\}|\$BUCKET|gs://BUCKET)", str(where), a) for a in self.args]


def read_recipe(name: str) -> Recipe:
    text = (LAUNCH / name).read_text()
    dry = _DRY.findall(text)
    assert len(dry) == 1, f"{name} states one dry-run command"
    stated, target = dry[0]
    if name.endswith(".yaml"):
        (container,) = yaml.safe_load(text)["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
            "containers"]
        assert container["command"] == ["python", "-m", "elf_eqx.train"]
        args = [str(a) for a in container["args"]]
        assert shlex.split(stated) == args, f"{name}: the dry run's arguments are the container's"
    else:
        (line,) = re.findall(r'^ELF_ARGS="(.+)"$', text, re.M)
        args = line.split()
        assert stated == "$ELF_ARGS" and "python -m elf_eqx.train $ELF_ARGS" in text
    return Recipe(name, text, args, target)


def flag(text: str, name: str) -> str:
    """The value the recipe's launcher gives ``name`` (``--name value``, ``--name=value``, ``NAME=value``;
    comments other than ``#SBATCH`` and the training arguments left out)."""
    lines = [line for line in text.splitlines()
             if (not line.lstrip().startswith("#") or line.startswith("#SBATCH")) and "ELF_ARGS=" not in line]
    found = re.findall(rf"{re.escape(name)}[= ]+\"?([^\s\"]+)", "\n".join(lines))
    assert found, f"no {name}"
    return found[0]


def test_each_recipe_describes_its_slice_consistently():
    for name in RECIPES:
        recipe = read_recipe(name)
        target = parse_target(recipe.target)
        text = recipe.text
        if name == "xpk_v5p64.sh":
            assert flag(text, "--tpu-type") == recipe.target == "v5p-64" and flag(text, "--num-slices") == "1"
            assert int(flag(text, "--max-restarts")) > 0  # the cluster restarts; elf_eqx's own stay 0
        elif name == "jobset_v5p64.yaml":
            spec = yaml.safe_load(text)["spec"]
            job = spec["replicatedJobs"][0]["template"]["spec"]
            pod = job["template"]["spec"]
            assert job["parallelism"] == job["completions"] == target.hosts == target.processes == 8
            assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == target.chips // target.hosts
            assert "v5p:" + pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == target.topology
            assert spec["failurePolicy"]["maxRestarts"] > 0 and job["backoffLimit"] == 0
            fail = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"][0]["onExitCodes"]
            assert fail["containerName"] == pod["containers"][0]["name"] and fail["values"] == [1, 2]
        elif name == "queued_resources_v5p64.sh":
            assert flag(text, "--accelerator-type") == recipe.target == "v5p-64"
            assert "queued-resources create" in text and "queued-resources delete" in text and "--worker=all" in text
        else:
            assert recipe.target == "h100x16" and target.hosts == 2
            assert int(flag(text, "--nodes")) == target.hosts and flag(text, "--ntasks-per-node") == "1"
            per_node = int(flag(text, "--gpus-per-node"))
            assert per_node == target.chips // target.hosts
            assert flag(text, "JAX_LOCAL_DEVICE_IDS") == ",".join(map(str, range(per_node))) and "srun" in text
        cfg = parse_train_config(recipe.args_in(Path("/unused")))
        assert cfg.model.name == "ELF-B"
        assert cfg.mesh.heartbeat_timeout_s == 60 and not cfg.plan.dry_run


def program_args(recipe: Recipe, where: Path) -> list[str]:
    """The recipe's arguments as far as they shape the compiled program (process, restart and
    output flags dropped), checked to be all that its config differs in from the program's."""
    args = recipe.args_in(where)
    dropped = {"--max-restarts", "--heartbeat-timeout-s", "--shutdown-timeout-s", "--init-timeout-s", "--output-dir"}
    kept = [a for i, a in enumerate(args) if a not in dropped and (i == 0 or args[i - 1] not in dropped)]
    full, bare = parse_train_config(args).to_dict(), parse_train_config(kept).to_dict()
    for section, fields in (("mesh", ("heartbeat_timeout_s", "shutdown_timeout_s", "init_timeout_s")),
                            ("run", ("max_restarts", "output_dir"))):
        for name in fields:
            full[section].pop(name), bare[section].pop(name)
    assert full == bare
    return kept


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_each_recipes_dry_run_compiles_for_its_target(name, tmp_path):
    from elf_eqx.train import main

    recipe = read_recipe(name)
    target = parse_target(recipe.target)
    if target.platform == "cuda" and not has_cuda_plugin():
        pytest.skip('JAX\'s CUDA plugin is not installed (pip install -e ".[gpu-aot]")')
    where = tmp_path / "bucket"
    key = (recipe.target, tuple(program_args(recipe, Path("/unused"))))
    if key not in _compiled:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            main([*recipe.args_in(where), *TINY, "--dry-run", "--target", recipe.target, "--json"])
        (_compiled[key],) = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    report = _compiled[key]
    assert report["target"] == recipe.target and report["devices"] == target.chips and report["fits"] is True
    assert report["hosts"] == target.hosts and report["global_batch"] == 512
    assert not where.exists()  # nothing written: no checkpoints, no metrics, no data cache
