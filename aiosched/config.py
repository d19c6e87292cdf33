"""YAML config -> a validated, frozen Config; every problem reported with file, line and key path.

Two files as users of the original system write them (an environment file with a
``scheduler:`` section and a tasks file with a ``tasks:`` section), or one file with both.
``${VAR}`` and ``${VAR:-default}`` are expanded before parsing. The whole configuration is
checked before anything starts: unknown keys (with a did-you-mean), wrong types, bad
trigger arguments, unknown executors, task modules that are missing or have no ``run`` /
BaseTask. :class:`ConfigError` lists every problem as ``file:line key.path: reason``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml  # type: ignore[import-untyped]

from .exceptions import ConfigError, ConfigProblem, ScheduleError, TriggerError
from .models import DEFAULT_POLICY, POLICY_OPTIONS, apply_options, check_option_type
from .task import is_task_class
from .triggers import TRIGGER_TYPES, build_trigger

EXECUTOR_NAMES = frozenset({"default", "async", "threadpool", "processpool"})
STORE_SCHEMES = frozenset({"memory", "sqlite", "postgresql", "postgres"})
LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_TOP_KEYS = frozenset({"scheduler", "tasks"})
_SCHEDULER_KEYS = frozenset(
    {"timezone", "executors", "job_defaults", "store", "api", "logging", "tasks_package", "shutdown_grace", "node_id"}
)
_EXECUTOR_KEYS = frozenset({"default_threads", "process_pool", "async_limit"})
_API_KEYS = frozenset({"enabled", "host", "port", "token", "auth_reads"})
_LOGGING_KEYS = frozenset({"level", "format"})
_TASK_KEYS = frozenset({"trigger", "args", "kwargs", "module", "name", "paused", "timezone"}) | POLICY_OPTIONS
_SECRET_KEYS = frozenset({"token", "password", "secret"})
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """The management API (``scheduler.api``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    auth_reads: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Logging (``scheduler.logging``): level and ``text`` or ``json`` lines."""

    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskConfig:
    """One entry of ``tasks:``, resolved to its callable."""

    id: str
    name: str
    func: Any
    task_ref: str
    trigger: str
    args: Mapping[str, Any]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]
    paused: bool = False
    timezone: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole validated configuration."""

    files: tuple[str, ...]
    timezone: str = "UTC"
    executors: Mapping[str, int] = field(default_factory=dict)
    job_defaults: Mapping[str, Any] = field(default_factory=dict)
    store: str = "sqlite:///aiosched.db"
    api: ApiConfig = field(default_factory=ApiConfig)
    logging: LogConfig = field(default_factory=LogConfig)
    tasks_package: str = "tasks"
    shutdown_grace: float | None = 30.0
    node_id: str | None = None
    tasks: tuple[TaskConfig, ...] = ()

    def task(self, task_id: str) -> TaskConfig:
        """The task named ``task_id``; KeyError with the known names otherwise."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        known = ", ".join(t.id for t in self.tasks) or "none"
        raise KeyError(f"no task {task_id!r} in the configuration (tasks: {known})")


# -- reading ---------------------------------------------------------------------------


class _Source:
    """One parsed file: its data and the line of every key path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.data: Any = None
        self.lines: dict[Path_, int] = {}

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


class _Problems:
    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, source: _Source, path: Path_, message: str) -> None:
        self.items.append(ConfigProblem(source.file, source.line(path), _dotted(path), message))


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _expand(text: str, source: _Source, problems: _Problems) -> str:
    out = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):

        def replace(match: re.Match[str], number: int = number) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    problems.items.append(
                        ConfigProblem(
                            source.file,
                            number,
                            "",
                            f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)",
                        )
                    )
                    return ""
                return default
            return value

        out.append(line if line.lstrip().startswith("#") else _VAR.sub(replace, line))
    return "".join(out)


def _read(path: Path, problems: _Problems) -> _Source:
    source = _Source(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.items.append(ConfigProblem(source.file, None, "", f"cannot read the file: {exc.strerror or exc}"))
        return source
    text = _expand(text, source, problems)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _index(node, (), source, problems)
            source.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        problems.items.append(ConfigProblem(source.file, mark.line + 1 if mark else None, "", f"bad YAML: {reason}"))
    except yaml.YAMLError as exc:
        problems.items.append(ConfigProblem(source.file, None, "", f"bad YAML: {exc}"))
    finally:
        loader.dispose()
    return source


def _index(node: yaml.Node, path: Path_, source: _Source, problems: _Problems) -> None:
    """Record the line of every key and report duplicate keys (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if key in seen:
                problems.items.append(
                    ConfigProblem(source.file, key_node.start_mark.line + 1, _dotted(child), "duplicate key")
                )
            seen.add(key)
            source.lines.setdefault(child, key_node.start_mark.line + 1)
            _index(value_node, child, source, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            source.lines.setdefault((*path, i), item.start_mark.line + 1)
            _index(item, (*path, i), source, problems)


# -- checking ----------------------------------------------------------------------------


def _hint(word: object, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(data: Mapping[str, Any], allowed: frozenset[str], path: Path_, src: _Source, out: _Problems) -> None:
    for key in data:
        if key not in allowed:
            out.add(src, (*path, key), f"unknown key{_hint(key, allowed)}")


def _mapping(value: Any, path: Path_, src: _Source, out: _Problems) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        out.add(src, path, f"must be a mapping of keys to values, not {_kind(value)}")
        return {}
    return value


def _kind(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list"}.get(
        type(value), type(value).__name__
    )


def _typed(value: Any, kinds: tuple[type, ...], described: str, path: Path_, src: _Source, out: _Problems) -> bool:
    secret = bool(path) and str(path[-1]) in _SECRET_KEYS
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        shown = "" if secret else f" (got {value!r})"
        out.add(src, path, f"must be {described}{shown}")
        return False
    return True


def _check_zone(value: Any, path: Path_, src: _Source, out: _Problems) -> str | None:
    if not _typed(value, (str,), "a time zone name such as 'Asia/Shanghai'", path, src, out):
        return None
    try:
        build_trigger("interval", {"seconds": 1}, timezone=value)
    except TriggerError:
        out.add(src, path, f"unknown time zone {value!r}")
        return None
    return str(value)


def _check_options(
    options: Mapping[str, Any], path: Path_, src: _Source, out: _Problems, *, executors: bool = True
) -> dict[str, Any]:
    good: dict[str, Any] = {}
    for key, value in options.items():
        problem = check_option_type(key, value)
        if problem:
            out.add(src, (*path, key), problem)
            continue
        if key == "executor" and value not in EXECUTOR_NAMES and executors:
            out.add(src, (*path, key), f"unknown executor {value!r}{_hint(value, EXECUTOR_NAMES)}")
            continue
        try:
            apply_options(DEFAULT_POLICY, {key: value})
        except ScheduleError as exc:
            out.add(src, (*path, key), exc.reason)
            continue
        good[key] = value
    return good


def _check_scheduler(data: Mapping[str, Any], src: _Source, out: _Problems) -> dict[str, Any]:
    path: Path_ = ("scheduler",)
    _unknown_keys(data, _SCHEDULER_KEYS, path, src, out)
    found: dict[str, Any] = {}
    if "timezone" in data:
        found["timezone"] = _check_zone(data["timezone"], (*path, "timezone"), src, out)
    executors = _mapping(data.get("executors"), (*path, "executors"), src, out)
    _unknown_keys(executors, _EXECUTOR_KEYS, (*path, "executors"), src, out)
    found["executors"] = {
        k: v
        for k, v in executors.items()
        if k in _EXECUTOR_KEYS and _typed(v, (int,), "a positive integer", (*path, "executors", k), src, out)
    }
    for key, value in found["executors"].items():
        if value < 1:
            out.add(src, (*path, "executors", key), f"must be a positive integer (got {value})")
    defaults = _mapping(data.get("job_defaults"), (*path, "job_defaults"), src, out)
    _unknown_keys(defaults, POLICY_OPTIONS, (*path, "job_defaults"), src, out)
    found["job_defaults"] = _check_options(
        {k: v for k, v in defaults.items() if k in POLICY_OPTIONS}, (*path, "job_defaults"), src, out
    )
    if "store" in data and _typed(data["store"], (str,), "a store URL", (*path, "store"), src, out):
        scheme = data["store"].split(":", 1)[0].lower()
        if "://" not in data["store"] or scheme not in STORE_SCHEMES:
            out.add(src, (*path, "store"), "must be memory://, sqlite:///path/to/file.db or postgresql://...")
        else:
            found["store"] = data["store"]
    found["api"] = _check_api(_mapping(data.get("api"), (*path, "api"), src, out), src, out)
    found["logging"] = _check_logging(_mapping(data.get("logging"), (*path, "logging"), src, out), src, out)
    if "tasks_package" in data and _typed(
        data["tasks_package"], (str,), "a package name", (*path, "tasks_package"), src, out
    ):
        found["tasks_package"] = data["tasks_package"]
    if "shutdown_grace" in data:
        grace = data["shutdown_grace"]
        if grace is None or _typed(grace, (int, float), "seconds (a number)", (*path, "shutdown_grace"), src, out):
            found["shutdown_grace"] = grace
    if "node_id" in data and _typed(data["node_id"], (str,), "a string", (*path, "node_id"), src, out):
        found["node_id"] = data["node_id"]
    return found


def _check_api(data: Mapping[str, Any], src: _Source, out: _Problems) -> ApiConfig:
    path: Path_ = ("scheduler", "api")
    _unknown_keys(data, _API_KEYS, path, src, out)
    kinds: dict[str, tuple[tuple[type, ...], str]] = {
        "enabled": ((bool,), "true or false"),
        "host": ((str,), "a host name or address"),
        "port": ((int,), "a port number"),
        "token": ((str,), "a string"),
        "auth_reads": ((bool,), "true or false"),
    }
    good = {
        k: v
        for k, v in data.items()
        if k in kinds and ((v is None and k == "token") or _typed(v, *kinds[k], (*path, k), src, out))
    }
    if "port" in good and not 0 <= good["port"] <= 65535:
        out.add(src, (*path, "port"), f"must be from 0 to 65535 (got {good.pop('port')})")
    api = ApiConfig(**good)
    from .web.auth import is_loopback  # here: the web package imports this module

    if api.enabled and not is_loopback(api.host) and not (api.token or os.environ.get("AIOSCHED_API_TOKEN")):
        out.add(
            src,
            (*path, "host"),
            f"binding {api.host!r} opens the API to the network: set api.token (or AIOSCHED_API_TOKEN) first",
        )
    return api


def _check_logging(data: Mapping[str, Any], src: _Source, out: _Problems) -> LogConfig:
    path: Path_ = ("scheduler", "logging")
    _unknown_keys(data, _LOGGING_KEYS, path, src, out)
    good: dict[str, Any] = {}
    level = data.get("level", "INFO")
    if _typed(level, (str,), "a level name", (*path, "level"), src, out):
        if level.upper() in LOG_LEVELS:
            good["level"] = level.upper()
        else:
            out.add(src, (*path, "level"), f"must be one of {', '.join(sorted(LOG_LEVELS))}{_hint(level, LOG_LEVELS)}")
    fmt = data.get("format", "text")
    if fmt in ("text", "json"):
        good["format"] = fmt
    else:
        out.add(src, (*path, "format"), f"must be text or json (got {fmt!r})")
    return LogConfig(**good)


def _check_task(task_id: str, data: Any, src: _Source, out: _Problems, *, package: str, zone: str) -> TaskConfig | None:
    path: Path_ = ("tasks", task_id)
    if not isinstance(data, Mapping):
        out.add(src, path, f"must be a mapping with at least a trigger, not {_kind(data)}")
        return None
    _unknown_keys(data, _TASK_KEYS, path, src, out)
    before = len(out.items)
    trigger = data.get("trigger")
    args = _mapping(data.get("args"), (*path, "args"), src, out)
    kwargs = _mapping(data.get("kwargs"), (*path, "kwargs"), src, out)
    if trigger is None:
        out.add(src, (*path, "trigger"), f"is required (one of {', '.join(sorted(TRIGGER_TYPES))})")
    elif not isinstance(trigger, str) or trigger not in TRIGGER_TYPES:
        out.add(src, (*path, "trigger"), f"unknown trigger type {trigger!r}{_hint(trigger, TRIGGER_TYPES)}")
    task_zone = zone
    if data.get("timezone") is not None:
        task_zone = _check_zone(data["timezone"], (*path, "timezone"), src, out) or zone
    if isinstance(trigger, str) and trigger in TRIGGER_TYPES:
        try:
            build_trigger(trigger, args, timezone=task_zone, schedule_id=task_id)
        except TriggerError as exc:
            where = (*path, "args", *exc.field.split(".")) if exc.field else (*path, "args")
            out.add(src, where, exc.reason)
    options = _check_options({k: v for k, v in data.items() if k in POLICY_OPTIONS}, path, src, out)
    for key in ("paused",):
        if key in data:
            _typed(data[key], (bool,), "true or false", (*path, key), src, out)
    module = data.get("module", task_id)
    if not isinstance(module, str) or not module.isidentifier():
        out.add(src, (*path, "module"), f"must be a module name in {package}/ (got {module!r})")
        return None
    found = _task_entry(package, module, path, src, out)
    if found is None or len(out.items) > before:
        return None
    func, ref = found
    name = data.get("name", task_id)
    return TaskConfig(
        id=task_id,
        name=str(name),
        func=func,
        task_ref=ref,
        trigger=str(trigger),
        args=MappingProxyType(dict(args)),
        kwargs=MappingProxyType(dict(kwargs)),
        options=MappingProxyType(options),
        paused=bool(data.get("paused", False)),
        timezone=task_zone,
    )


def _task_entry(package: str, module: str, path: Path_, src: _Source, out: _Problems) -> tuple[Any, str] | None:
    """The task's callable: ``run`` in ``package.module``, or its one BaseTask subclass."""
    full = f"{package}.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as exc:
        missing = exc.name == full or (exc.name is not None and full.startswith(f"{exc.name}."))
        reason = (
            f"no task module {full} (looked for {package}/{module}.py)" if missing else f"cannot import {full}: {exc}"
        )
        out.add(src, path, reason)
        return None
    except Exception as exc:
        out.add(src, path, f"importing {full} failed: {type(exc).__name__}: {exc}")
        return None
    run = getattr(mod, "run", None)
    if callable(run):
        return run, f"{full}:run"
    classes = [
        c for _, c in inspect.getmembers(mod, is_task_class) if c.__module__ == full and not inspect.isabstract(c)
    ]
    if len(classes) == 1:
        return classes[0], f"{full}:{classes[0].__qualname__}"
    if classes:
        names = ", ".join(c.__name__ for c in classes)
        out.add(src, path, f"{full} defines several BaseTask classes ({names}); add a run() or keep one")
    else:
        out.add(src, path, f"{full} has no run() function and no BaseTask subclass")
    return None


def _sections(sources: list[_Source], problems: _Problems) -> tuple[_Source | None, _Source | None]:
    """The file holding ``scheduler:`` and the one holding ``tasks:`` (each at most once)."""
    found: dict[str, _Source] = {}
    for src in sources:
        if src.data is None:
            continue
        if not isinstance(src.data, Mapping):
            problems.add(src, (), "must be a mapping with a scheduler: and/or tasks: section")
            continue
        _unknown_keys(src.data, _TOP_KEYS, (), src, problems)
        for key in ("scheduler", "tasks"):
            if key not in src.data:
                continue
            if key in found:
                problems.add(src, (key,), f"already defined in {found[key].file}")
            else:
                found[key] = src
    return found.get("scheduler"), found.get("tasks")


def load_config(files: Sequence[str | os.PathLike[str]]) -> Config:
    """Read, expand, validate and resolve the config files.

    Raises:
        ConfigError: with every problem found in every file; nothing is half-loaded.
    """
    problems = _Problems()
    sources = [_read(Path(f), problems) for f in files]
    scheduler_src, tasks_src = _sections(sources, problems)
    settings: dict[str, Any] = {}
    if scheduler_src is not None:
        data = _mapping(scheduler_src.data["scheduler"], ("scheduler",), scheduler_src, problems)
        settings = {k: v for k, v in _check_scheduler(data, scheduler_src, problems).items() if v is not None}
    zone = settings.get("timezone", "UTC")
    package = settings.get("tasks_package", "tasks")
    tasks: list[TaskConfig] = []
    if tasks_src is not None:
        entries = _mapping(tasks_src.data["tasks"], ("tasks",), tasks_src, problems)
        _ensure_importable(package)
        for task_id, entry in entries.items():
            task = _check_task(str(task_id), entry, tasks_src, problems, package=package, zone=zone)
            if task is not None:
                tasks.append(task)
    if problems.items:
        raise ConfigError(problems.items)
    return Config(files=tuple(str(f) for f in files), tasks=tuple(tasks), **settings)


def _ensure_importable(package: str) -> None:
    """Task packages live beside the config, in the working directory (like ``python -m``)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
