"""``--dry-run --target``: the train step and the sampler compiled for hardware this machine does not
have (TPU through libtpu, the ``tpu-aot`` extra the dev install includes; NVIDIA cards where the
``gpu-aot`` extra is installed), reported without touching data or output directories."""

from __future__ import annotations

import json

import pytest

from elf_eqx.aot.devices import has_cuda_plugin
from elf_eqx.aot.dry_run import largest_fitting

# ELF-T blocks on the offline MiniLM encoder (width 384, 30,522 ids): a compile takes seconds.
TINY = ["--preset", "quickstart", "--model", "ELF-T", "--max-length", "32", "--data", "/no/such/data.jsonl"]


def dry_run(main, argv, capsys) -> list[dict]:
    capsys.readouterr()
    main([*argv, "--dry-run", "--json"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def sharded_train(tmp_path_factory):
    """The train step of a 4-chip v5p slice with fsdp 2 × tensor 2, and the output directory it was given."""
    import contextlib
    import io

    from elf_eqx.train import main

    out = tmp_path_factory.mktemp("dry") / "run"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main([*TINY, "--global-batch", "8", "--mesh-fsdp", "2", "--mesh-tensor", "2", "--target", "v5p:2x2x1",
              "--output-dir", str(out), "--dry-run", "--json"])
    reports = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    return reports, out


@pytest.mark.slow
def test_a_four_chip_tpu_slice_compiles_the_sharded_train_step(sharded_train):
    (report,), out = sharded_train
    for key in ("target", "devices", "global_batch", "memory_gib_per_device", "hbm_gib_per_device", "fits",
                "analytic_flops", "compiler_flops", "compiler_estimate_s", "compile_s"):
        assert key in report, key
    assert report["target"] == "v5p:2x2x1" and report["devices"] == 4 and report["global_batch"] == 8
    assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2} and report["fits"] is True
    assert report["compute_dtype"] == "bfloat16" and report["attention"] == "pallas"  # auto, resolved for the TPU
    assert "tpu_custom_call" in report["custom_calls"]  # the flash kernel, run per device under shard_map
    assert report["compiler_estimate_s"] > 0 and report["cost_from_unrolled_twin"]
    assert {"all-gather", "all-reduce"} <= set(report["collectives"])  # fsdp gathers weights, reduces gradients
    assert not out.exists()  # nothing written: no checkpoints, no metrics, no data cache


@pytest.mark.slow
def test_branch_rows_the_shards_do_not_divide_are_padded_for_the_kernel(capsys):
    from elf_eqx.train import main

    # Batch 6 on 2 batch shards: the decode branch takes 1 row and the denoise branch 5.
    (report,) = dry_run(main, [*TINY, "--global-batch", "6", "--mesh-fsdp", "2", "--target", "v5p:2x1x1",
                               "--output-dir", "unused"], capsys)
    assert report["fits"] is True and "tpu_custom_call" in report["custom_calls"]
    negative = [n for n in report["notes"] if "negative step time" in n]
    assert (report["compiler_estimate_s"] is None) == bool(negative)  # a negative estimate is reported as none
    assert report["compiler_estimate_s"] is None or report["compiler_estimate_s"] > 0


def test_sharded_leaves_take_their_share_of_the_arguments(sharded_train):
    (report,), _ = sharded_train
    # The arguments of the step are the sharded state (weights, EMA, optimizer state), the batch's
    # rows of this device and the replicated frozen encoder; the compiler's figure is their sum
    # (up to TPU tile padding and the key).
    expected = sum(report[k] for k in ("param_bytes_per_device", "ema_bytes_per_device", "opt_state_bytes_per_device",
                                       "batch_bytes_per_device", "encoder_bytes_per_device"))
    assert report["argument_bytes"] == pytest.approx(expected, rel=0.03)
    assert report["ema_bytes_per_device"] == report["param_bytes_per_device"]


def test_the_sampler_compiles_for_the_same_slice(baseline_runs, capsys):
    from elf_eqx.sample import main

    (report,) = dry_run(main, [str(baseline_runs["mdlm"]), "--target", "v5p:2x2x1", "--batch-size", "4",
                               "--steps", "3"], capsys)
    assert report["program"] == "sample" and report["devices"] == 4 and report["fits"] is True
    assert report["family"] == "mdlm" and report["nfe"] == 3 and report["global_batch"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("unrolled", [False, True])
def test_analytic_and_compiler_flops_agree_on_one_chip(capsys, unrolled):
    from elf_eqx.train import main

    flags = ["--scan-unroll"] if unrolled else []
    (report,) = dry_run(main, [*TINY, *flags, "--global-batch", "8", "--target", "v5p:1x1x1", "--output-dir", "unused"],
                        capsys)
    # A scanned program's FLOPs come from its twin with every layer loop unrolled; an unrolled one is
    # counted in full by itself. Elementwise work makes the rest.
    assert report["cost_from_unrolled_twin"] is not unrolled and report["scan_unroll"] is unrolled
    assert report["compiler_flops"] == pytest.approx(report["analytic_total_flops"], rel=0.10)
    assert report["mfu"] is not None and report["tokens_per_s"] > 0


def test_a_batch_that_cannot_fit_is_reported_as_not_fitting(capsys):
    from elf_eqx.train import main

    (report,) = dry_run(main, [*TINY, "--max-length", "256", "--global-batch", "8192", "--target", "v5e:1x1",
                               "--output-dir", "unused"], capsys)
    assert report["fits"] is False and report["memory_gib_per_device"] > report["hbm_gib_per_device"]
    assert report["out_of_memory"]  # the TPU compiler refuses it and says how much it needed


def test_an_impossible_mesh_is_one_line_naming_the_flag(capfd):
    from elf_eqx.train import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--global-batch", "8", "--mesh-fsdp", "3", "--target", "v5p:2x2x1", "--dry-run"])
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error")]
    assert stop.value.code == 2 and len(lines) == 1 and "--mesh-fsdp" in lines[0], lines


def test_dry_run_flags_need_dry_run(capfd):
    from elf_eqx.train import main

    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--target", "v5p-64"])
    assert stop.value.code == 2 and "--dry-run" in capfd.readouterr().err


def test_largest_fitting_batch_is_found_by_doubling_and_bisecting():
    calls = []

    def fits(batch):
        calls.append(batch)
        return batch <= 100

    assert largest_fitting(fits, 64, 8) == 96 and len(calls) <= 6
    assert largest_fitting(lambda b: b <= 20, 512, 8) == 16
    assert largest_fitting(lambda b: False, 64, 8) is None


@pytest.mark.skipif(not has_cuda_plugin(), reason='JAX\'s CUDA plugin is not installed (pip install -e ".[gpu-aot]")')
def test_an_h100_compiles_the_step_with_cudnn_attention(capsys):
    from elf_eqx.train import main

    (report,) = dry_run(main, [*TINY, "--global-batch", "8", "--target", "h100", "--output-dir", "unused"], capsys)
    assert report["attention"] == "cudnn" and any(k.startswith("__cudnn$fmha") for k in report["custom_calls"])
    assert report["compiler_estimate_s"] is None and report["fits"] is True
