"""Where a training state's arrays live on a mesh (docs/method.md#parallelism): the weights, their
EMA and the optimizer state by the partition rules (:mod:`elf_eqx.parallel.partition`); with
ZeRO-1 (``shard_optimizer_state``) the optimizer state is split over the ``data`` axis too, so each
data-parallel device keeps ``1/data`` of Muon's momentum and Adam's moments. The update of a leaf
is elementwise, so each device updates its part; the partitioner gathers the parts where the
weights need them whole. The state's tree is the same either way: a checkpoint saved with one
setting restores with the other.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jax.sharding import Mesh

from elf_eqx.parallel.partition import tree_shardings


def train_state_shardings(state: Any, mesh: Mesh, *, shard_optimizer_state: bool = False) -> Any:
    """A :class:`~elf_eqx.training.step.TrainState` of shardings for ``state`` (its arrays or
    ``ShapeDtypeStruct`` leaves) on ``mesh``; ``shard_optimizer_state`` splits ``state.opt_state``
    over ``data`` as well (ZeRO-1)."""
    shardings = tree_shardings(state, mesh)
    if not shard_optimizer_state:
        return shardings
    return eqx.tree_at(lambda s: s.opt_state, shardings, tree_shardings(state.opt_state, mesh, over_data=True),
                       is_leaf=lambda x: x is None)
