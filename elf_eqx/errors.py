"""The one family of expected failures (README.md, "Errors").

Everything a user can get wrong — a flag, a config file or YAML key, a data file, a checkpoint, a
weights file or pickle, a device mesh, a hub source that cannot be reached offline — is raised as a
subclass of :class:`UserError`. The command lines catch :class:`UserError` and nothing broader: its
message is printed as one line (``error: <what>: <why>; <what to do>``) with exit code 2. Any other
exception is a bug in elf_eqx (or in a library it calls) and keeps its traceback.

Each subclass also derives from the built-in type a Python caller would expect (``ValueError`` for
a bad value, ``FileNotFoundError`` for a missing file, ...), so ``except ValueError`` around the
Python API keeps working. Third-party exceptions that mean "the user's input cannot be used" (the
hub offline, a damaged dataset folder) are translated into one of these where they are caught,
naming the input; they are never caught wholesale at the command line.
"""

from __future__ import annotations

import pickle
from typing import ClassVar


RETRYABLE_EXIT = 42
"""The exit code of a failure that a rerun of the same command can get past (a lost peer process):
what ``--max-restarts`` retries, and the code XPK's and our JobSet's restart policies retry on."""


class UserError(Exception):
    """An expected failure caused by what the user gave, worded for them."""

    hint: ClassVar[str] = ""
    """What to do about it, added to the printed line when the message does not already say."""
    exit_code: ClassVar[int] = 2
    """The command's exit code when this ends it (2: not worth retrying as it is)."""


class ConfigError(UserError, ValueError):
    """A flag, config file, YAML key, preset or setting value that cannot be used."""

    hint = "see --help"


class MeshError(ConfigError):
    """A device mesh that does not fit the devices, the batch or the target."""

    hint = "choose --mesh-data, --mesh-fsdp and --mesh-tensor to fit the devices and the batch"


class DataError(UserError, ValueError):
    """A data source, record, tokenizer or loader setting that the pipeline cannot use.

    The message is one line naming the file, dataset or field at fault.
    """


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder, hub repository or checkpoint step that is not there (or not reachable)."""


class OutputExistsError(UserError, FileExistsError):
    """An output that already exists and would be overwritten."""

    hint = "choose another output, or remove this one"


class IncompatibleModelError(ConfigError):
    """Pieces that do not fit each other: a tokenizer and a model, an encoder and a run, a
    checkpoint and an architecture."""

    hint = ""  # the message lists what differs


class BadWeightsError(UserError, ValueError):
    """A weights file or release checkpoint that cannot be read as one: not safetensors, Flax
    msgpack or orbax, cut short, or without the entries it should hold."""


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoints do not belong to the model, or do not fit the state, being resumed or read."""

    hint = "use another output directory or the original settings"


class UnreadableCheckpointError(UserError):
    """The chosen checkpoint, or every checkpoint of a directory, cannot be read."""

    hint = "choose another checkpoint with --step (sample) or --resume-step (train)"


class PeerLostError(UserError, RuntimeError):
    """Another process of a multi-process run was lost, or could not be reached: a rerun of the same
    command (on every host) resumes from the last complete checkpoint."""

    hint = "rerun the same command on every host; it resumes from the last complete checkpoint"
    exit_code = RETRYABLE_EXIT


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle that would import or call something outside the allowed set."""

    hint = "use the released encoder pickle or a safetensors folder you trust"


class NonFiniteLoss(UserError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    hint = "lower the learning rate or resume from an earlier checkpoint with --resume-step"
