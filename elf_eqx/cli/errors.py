"""One error policy for every command line (``train``, ``sample``, ``eval``, ``convert``, the benchmarks).

An *expected* failure, an :class:`elf_eqx.errors.UserError` (bad flag, config file or YAML key;
bad data; bad or unsafe weights; an unreadable checkpoint; a mesh that does not fit the batch; the
hub unreachable offline), or a flag parser's error, ends the command with exit code 2 and one line
on stderr::

    error: <what>: <why>; <what to do>

``--debug`` (anywhere on the command line) or ``ELF_DEBUG=1`` lets the exception through with
its traceback. Nothing broader is caught: any other exception (a ``KeyError``, ``ValueError`` or
``OSError`` that is not a ``UserError``) is a bug and keeps its traceback.
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

from elf_eqx.errors import UserError
from elf_eqx.parallel.platforms import prefer_present_hardware

EXIT_CODE = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "ELF_DEBUG"

R = TypeVar("R")
C = TypeVar("C")


class CLIError(UserError):
    """An expected failure, worded for the user: ``what`` failed, ``why``, and what to do about it."""

    def __init__(self, what: str, why: str = "", todo: str = ""):
        self.what, self.why, self.todo = what, why, todo
        super().__init__(self.line())

    def line(self) -> str:
        """``<what>: <why>; <what to do>`` (parts left empty are left out), on one line."""
        text = self.what + (f": {self.why}" if self.why else "") + (f"; {self.todo}" if self.todo else "")
        return " ".join(text.split())


class CLIExit(SystemExit):
    """How a command ends on an expected failure: exit code 2 (or the failure's own
    :attr:`~elf_eqx.errors.UserError.exit_code`: 42 for a lost peer process, which a rerun gets
    past); ``str()`` is the printed line (so ``pytest.raises(SystemExit, match=...)`` sees the message)."""

    def __init__(self, message: str, code: int = EXIT_CODE):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def one_line(err: UserError | str) -> str:
    """``error: ...`` for an expected failure (a :class:`UserError`, or a flag parser's message):
    its message on one line, with the class's ``hint`` on what to do when the message has none."""
    if isinstance(err, CLIError):
        return f"error: {err.line()}"
    text = " ".join(str(err).split())
    if isinstance(err, UserError):
        text = text or type(err).__name__
        if err.hint and ";" not in text:
            text = f"{text}; {err.hint}"
    for said in ("error: ", "error in "):  # messages that already say it ("error in FILE: why")
        text = text.removeprefix(said)
    return f"error: {text}"


def debugging(argv: Sequence[str]) -> bool:
    """Whether tracebacks are wanted: ``--debug`` in ``argv`` or ``ELF_DEBUG`` set to a true value."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes", "on"}


_DEBUG_NOW = [False]


def debug_active() -> bool:
    """Whether the command now running was given ``--debug`` (or ``ELF_DEBUG``): a supervisor
    (:mod:`elf_eqx.parallel.supervisor`) passes it on to the process it starts."""
    return _DEBUG_NOW[0]


def cli_main(body: Callable[[list[str]], R]) -> Callable[[Sequence[str] | None], R]:
    """Decorate a CLI's ``main(argv)``: ``argv`` defaults to ``sys.argv[1:]``, ``--debug`` is taken
    out of it, and expected failures (:class:`elf_eqx.errors.UserError`, and a flag parser's
    ``SystemExit`` with a message) end as one line on stderr and :class:`CLIExit` (exit code 2).
    Nothing else is caught: any other exception is a bug and keeps its traceback. Before the body
    runs, JAX is kept to the hardware this host has
    (:func:`~elf_eqx.parallel.platforms.prefer_present_hardware`: no libtpu start-up on hosts
    without a TPU)."""

    @functools.wraps(body)
    def main(argv: Sequence[str] | None = None) -> R:
        prefer_present_hardware()
        args = list(sys.argv[1:] if argv is None else argv)
        debug = debugging(args)
        args = [a for a in args if a != DEBUG_FLAG]
        outer, _DEBUG_NOW[0] = _DEBUG_NOW[0], debug
        try:
            return body(args)
        except CLIExit:
            raise
        except SystemExit as err:
            if debug or err.code is None or isinstance(err.code, int):
                raise
            failure: UserError | str = str(err.code)
        except UserError as err:
            if debug:
                raise
            failure = err
        finally:
            _DEBUG_NOW[0] = outer
        message = one_line(failure)
        print(message, file=sys.stderr, flush=True)
        raise CLIExit(message, failure.exit_code if isinstance(failure, UserError) else EXIT_CODE) from None

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
