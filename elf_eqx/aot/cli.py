"""How the command lines run a dry run (``--dry-run``): compile only for the CPU backend of this
machine (the target's devices are compile-only descriptions, so no accelerator here is touched),
then print the reports as a table or as JSON lines."""

from __future__ import annotations

from collections.abc import Callable

import jax

from elf_eqx.aot.dry_run import DryRunResult
from elf_eqx.cli.args import DryRunFlags


def print_dry_run(flags: DryRunFlags, run: Callable[[], DryRunResult]) -> DryRunResult:
    """Run the dry run ``run`` for ``flags`` and print its reports; returns them."""
    if flags.target != "local":
        # Compile-only targets need no backend of this machine's but the CPU; on a host where libtpu is
        # installed, this also keeps the run from trying (and locking) the TPU backend.
        jax.config.update("jax_platforms", "cpu")
    result = run()
    print(result.json_lines() if flags.json else result.text(), flush=True)
    return result
