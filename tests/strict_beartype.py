"""The type checker the tests run on every ``elf_eqx`` function (named in pyproject.toml's
``--jaxtyping-packages``): beartype, plus a check of *every* item of a container argument or
return value.

beartype checks one random item per container (its O(1) strategy); its O(n) strategy,
``BeartypeConf(strategy=BeartypeStrategy.On)``, is accepted but not implemented (beartype
0.23 still checks one item). So :func:`typechecker` wraps beartype's checker with a walk over
the items of list/tuple/set/sequence/mapping hints, recursively, checking each leaf with
beartype (jaxtyping array hints included, under the same shape memo).
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import types
import typing

from beartype import beartype
from beartype.door import is_bearable

_ITEMS = (list, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet, abc.Collection)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_UNIONS = (typing.Union, types.UnionType)


def _walks(hint: object) -> bool:
    """Whether checking ``hint`` needs a walk over items (a parametrised container somewhere in it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _ITEMS or origin in _MAPPINGS or (origin is tuple and args):
        return True
    if origin in _UNIONS or origin is typing.Annotated:
        return any(_walks(a) for a in (args if origin in _UNIONS else args[:1]))
    return False


def _ok(value: object, hint: object) -> bool:
    """``value`` matches ``hint``, every item of every container included."""
    if hint is typing.Any or hint is object:
        return True
    if isinstance(hint, type) and not typing.get_args(hint):
        return isinstance(value, hint)
    if not is_bearable(value, hint):
        return False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        return any(_ok(value, a) for a in args)
    if origin is typing.Annotated:
        return _ok(value, args[0])
    if not args:
        return True
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_ok(item, args[0]) for item in value)
        return all(_ok(item, a) for item, a in zip(value, args))
    if origin in _MAPPINGS and len(args) == 2:
        return all(_ok(k, args[0]) and _ok(v, args[1]) for k, v in value.items())
    if origin in _ITEMS and len(args) == 1 and not isinstance(value, (str, bytes)):
        return all(_ok(item, args[0]) for item in value)
    return True


def typechecker(fn):
    """beartype's checker for ``fn``, plus every item of its container arguments and return value."""
    checked = beartype(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
    except Exception:  # an unresolvable annotation: beartype alone (it reports what it can)
        return checked
    deep = {name: hint for name, hint in hints.items() if _walks(hint)}
    if not deep:
        return checked

    @functools.wraps(checked)
    def wrapper(*args, **kwargs):
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if name in deep and not _ok(value, deep[name]):
                raise TypeError(f"{fn.__qualname__}: parameter {name!r} = {value!r:.200} is not a {deep[name]} in every item")
        out = checked(*args, **kwargs)
        if "return" in deep and not _ok(out, deep["return"]):
            raise TypeError(f"{fn.__qualname__}: return value {out!r:.200} is not a {deep['return']} in every item")
        return out

    return wrapper
