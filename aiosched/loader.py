"""Task references: ``"package.module:qualname"`` <-> the callable it names."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

from .exceptions import ScheduleError


def resolve(ref: str, *, schedule_id: str | None = None) -> Any:
    """Import ``"package.module:qualname"`` and return the object it names.

    Raises ScheduleError naming the schedule when the module or attribute is missing.
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ScheduleError(f"task reference {ref!r} must look like 'package.module:function'", schedule_id=schedule_id)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScheduleError(f"cannot import module {module_name!r}: {exc}", schedule_id=schedule_id) from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ScheduleError(f"module {module_name!r} has no {qualname!r}", schedule_id=schedule_id) from exc
    return target


def reference_of(func: Any) -> str | None:
    """The importable reference of ``func``, or ``None`` if it has none (memoised).

    A function defined at module level (or a class, or a method reachable by qualname)
    has one; a lambda, a closure, a partial or a bound method of an instance does not.
    """
    try:
        return _reference_of(func)
    except TypeError:  # unhashable callable: work it out each time
        return _reference_of.__wrapped__(func)


@functools.lru_cache(maxsize=4096)
def _reference_of(func: Any) -> str | None:
    if isinstance(func, functools.partial) or inspect.ismethod(func):
        return None
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    ref = f"{module}:{qualname}"
    try:
        return ref if resolve(ref) is func else None
    except ScheduleError:
        return None


def callable_name(func: Any) -> str:
    """A readable name for logs: the qualname, unwrapping partials."""
    while isinstance(func, functools.partial):
        func = func.func
    return str(getattr(func, "__qualname__", None) or getattr(type(func), "__qualname__", repr(func)))
