"""One error policy for every command line (``train``, ``sample``, ``eval``, ``convert``, the benchmarks).

An *expected* failure (bad flag, config file or YAML key; bad data; bad or unsafe weights; an
unreadable checkpoint; a mesh that does not fit the batch; the hub unreachable offline) ends the
command with exit code 2 and one line on stderr::

    error: <what>: <why>; <what to do>

``--debug`` (anywhere on the command line) or ``ELF_DEBUG=1`` lets the exception through with
its traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import tyro

EXIT_CODE = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "ELF_DEBUG"

R = TypeVar("R")
C = TypeVar("C")


class CLIError(Exception):
    """An expected failure, worded for the user: ``what`` failed, ``why``, and what to do about it."""

    def __init__(self, what: str, why: str = "", todo: str = ""):
        self.what, self.why, self.todo = what, why, todo
        super().__init__(self.line())

    def line(self) -> str:
        """``<what>: <why>; <what to do>`` (parts left empty are left out), on one line."""
        text = self.what + (f": {self.why}" if self.why else "") + (f"; {self.todo}" if self.todo else "")
        return " ".join(text.split())


class CLIExit(SystemExit):
    """How a command ends on an expected failure: exit code 2; ``str()`` is the printed line (so
    ``pytest.raises(SystemExit, match=...)`` sees the message)."""

    def __init__(self, message: str):
        super().__init__(EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that are expected failures (imported lazily: this module stays light).

    ``ValueError`` and ``OSError`` cover bad configs, flags and YAML keys, data errors, mesh and
    batch mismatches, missing files and hub access offline (huggingface_hub's offline errors are
    ``OSError``/``ValueError`` subclasses); the named types are listed for the reader.
    """
    from elf_eqx.data.errors import DataError
    from elf_eqx.io.safe_pickle import UnsafePickleError
    from elf_eqx.training.checkpoint import CheckpointMismatchError, UnreadableCheckpointError
    from elf_eqx.training.loop import NonFiniteLoss

    return (CLIError, UnsafePickleError, UnreadableCheckpointError, CheckpointMismatchError, DataError,
            NonFiniteLoss, ValueError, OSError, KeyError)


# Hints for expected failures whose message says what and why but not what to do.
_HINTS: tuple[tuple[str, str], ...] = (
    ("UnsafePickleError", "use the released encoder pickle or a safetensors folder you trust"),
    ("UnreadableCheckpointError", "choose another checkpoint with --step (sample) or --resume-step (train)"),
    ("CheckpointMismatchError", "use another output directory or the original settings"),
)


def one_line(err: BaseException) -> str:
    """``error: ...`` for an expected failure: its message on one line, with a hint on what to do
    when the message has none."""
    if isinstance(err, CLIError):
        return f"error: {err.line()}"
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing entry {text}"
    names = {cls.__name__ for cls in type(err).__mro__}
    hint = next((h for name, h in _HINTS if name in names), "")
    if hint and ";" not in text:
        text = f"{text}; {hint}"
    for said in ("error: ", "error in "):  # messages that already say it ("error in FILE: why")
        text = text.removeprefix(said)
    return f"error: {text}"


def debugging(argv: Sequence[str]) -> bool:
    """Whether tracebacks are wanted: ``--debug`` in ``argv`` or ``ELF_DEBUG`` set to a true value."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes", "on"}


def cli_main(body: Callable[[list[str]], R]) -> Callable[[Sequence[str] | None], R]:
    """Decorate a CLI's ``main(argv)``: ``argv`` defaults to ``sys.argv[1:]``, ``--debug`` is taken
    out of it, and expected failures (:func:`expected_errors`, and ``SystemExit`` with a message)
    end as one line on stderr and :class:`CLIExit` (exit code 2)."""

    @functools.wraps(body)
    def main(argv: Sequence[str] | None = None) -> R:
        args = list(sys.argv[1:] if argv is None else argv)
        debug = debugging(args)
        args = [a for a in args if a != DEBUG_FLAG]
        try:
            return body(args)
        except CLIExit:
            raise
        except SystemExit as err:
            if debug or err.code is None or isinstance(err.code, int):
                raise
            failure: BaseException = err
        except expected_errors() as err:
            if debug:
                raise
            failure = err
        message = one_line(failure if not isinstance(failure, SystemExit) else ValueError(str(failure.code)))
        print(message, file=sys.stderr, flush=True)
        raise CLIExit(message) from None

    return main


_BOX = re.compile(r"^[\s│╭╰─┃┏┗━|+]*|[\s│╮╯─┃┓┛━|+]*$")


def _condense(text: str) -> str:
    """A flag parser's boxed error message as one line: its first paragraph (else the box title)."""
    lines = [_BOX.sub("", line) for line in text.splitlines()]
    title = next((line for line in lines if line), "bad flag")
    body: list[str] = []
    for line in lines[lines.index(title) + 1:]:
        if not line:
            if body:
                break
            continue
        body.append(line)
    return " ".join(" ".join(body or [title]).split())


@contextlib.contextmanager
def flag_errors() -> Iterator[None]:
    """Around flag parsing: a parse error (tyro prints a box and exits 2) becomes a one-line
    :class:`CLIError`; anything printed by a successful parse (or ``--help``) is passed on."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except SystemExit as err:
        if err.code in (0, None) or not captured.getvalue().strip():
            sys.stderr.write(captured.getvalue())
            raise
        raise CLIError("bad flag", _condense(captured.getvalue()), "see --help") from None
    sys.stderr.write(captured.getvalue())


def run_parsed(config_type: type[C], run: Callable[[C], object], argv: Sequence[str] | None = None) -> None:
    """A script's command line: parse ``argv`` (default ``sys.argv[1:]``) into ``config_type`` with
    tyro and call ``run`` on it, under :func:`cli_main`'s error policy."""

    @cli_main
    def main(args: list[str]) -> None:
        with flag_errors():
            config = tyro.cli(config_type, args=args)
        run(config)

    main(argv)
