"""S16 (U): a bad configuration is refused before any port or store is opened.

Cases: bad YAML, unknown trigger, minute 60, unknown zone, duplicate id, unknown task, negative
timeout, unknown key (and a secret of the wrong type). Passes when ``aiosched run`` exits != 0
(2) for each, with ``file:line key.path: reason``, having opened no store file and bound no port
(in process: ``sqlite3.connect`` and ``socket.bind`` are never called; in a real process: the
store file is not created and a port the test holds is not contended, while a valid config on
the same settings creates the file and fails on the port); secrets are never echoed; and
``aiosched check`` prints the same problems. More cases: tests/test_config.py, tests/test_cli.py.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosched.cli import main

from .conftest import FigureRecorder
from .harness import ROOT

SECRETS = ("tok-S3CR3T", "kw-S3CR3T", "987654321")
OTHER = "  other: {module: echo, trigger: interval, args: {seconds: 1}, kwargs: {password: kw-S3CR3T}}\n"
# case: (tasks file, line, key path, words of the reason); the env file is shared
CASES: dict[str, tuple[str, int, str, str]] = {
    "bad YAML": ("tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1\n", 5, "", "bad YAML"),
    "unknown trigger": (
        "tasks:\n  echo:\n    trigger: cronn\n" + OTHER,
        3,
        "tasks.echo.trigger",
        "unknown trigger type",
    ),
    "minute 60": (
        "tasks:\n  echo:\n    trigger: cron\n    args:\n      minute: 60\n" + OTHER,
        5,
        "tasks.echo.args.minute",
        "60",
    ),
    "unknown zone": (
        "tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n    timezone: Mars/Olympus\n" + OTHER,
        5,
        "tasks.echo.timezone",
        "unknown time zone 'Mars/Olympus'",
    ),
    "duplicate id": (
        "tasks:\n  echo: {trigger: interval, args: {seconds: 1}}\n  echo: {trigger: interval, args: {seconds: 2}}\n"
        + OTHER,
        3,
        "tasks.echo",
        "duplicate key",
    ),
    "unknown task": (
        "tasks:\n  nope:\n    trigger: interval\n    args: {seconds: 1}\n" + OTHER,
        2,
        "tasks.nope",
        "no task module",
    ),
    "negative timeout": (
        "tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n    timeout: -5\n" + OTHER,
        5,
        "tasks.echo.timeout",
        "must be positive",
    ),
    "unknown key": (
        "tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n    max_attempt: 3\n" + OTHER,
        5,
        "tasks.echo.max_attempt",
        "unknown key (did you mean 'max_attempts'?)",
    ),
}
GOOD = "tasks:\n  echo: {trigger: interval, args: {seconds: 1}}\n" + OTHER


def env_file(tmp_path: Path, port: int, token: str = '"tok-S3CR3T"') -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(
        "scheduler:\n  timezone: UTC\n  tasks_package: tests.cli_tasks\n"
        f"  store: sqlite:///{tmp_path / 'store.db'}\n"
        f"  api: {{enabled: true, port: {port}, token: {token}}}\n"
    )
    return path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every store connection and socket bind attempted in this process."""
    seen: list[str] = []
    connect, bind = sqlite3.connect, socket.socket.bind

    def spy_connect(*args: Any, **kwargs: Any) -> Any:
        seen.append(f"sqlite3.connect{args[:1]}")
        return connect(*args, **kwargs)

    def spy_bind(self: socket.socket, address: Any) -> None:
        seen.append(f"bind {address}")
        bind(self, address)

    monkeypatch.setattr(sqlite3, "connect", spy_connect)
    monkeypatch.setattr(socket.socket, "bind", spy_bind)
    yield seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_s16_a_bad_config_is_refused_before_anything_opens(
    case: str, tmp_path: Path, opened: list[str], capsys: pytest.CaptureFixture[str], figure: FigureRecorder
) -> None:
    text, line, path, words = CASES[case]
    env = env_file(tmp_path, port=8089)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(text)
    files = ["--env", str(env), "--config", str(tasks)]
    code = main(["run", *files])
    run = capsys.readouterr()
    check_code = main(["check", *files])
    check = capsys.readouterr()

    where = f"{tasks}:{line} {path}: " if path else f"{tasks}:{line}: "
    problems = [p.strip() for p in run.err.splitlines() if p.startswith("  ")]
    named = [p for p in problems if p.startswith(where) and words in p]
    echoed = [s for s in SECRETS if s in run.err + run.out + check.err + check.out]
    figure(
        "S16",
        f"{case}: exit codes run/check; file:line key.path shown",
        f"{code}/{check_code}; {bool(named)}",
        "2/2; True",
    )
    figure("S16", f"{case}: stores or ports opened; secrets echoed", f"{len(opened)}; {len(echoed)}", "0; 0")
    assert (code, check_code) == (2, 2)
    assert named, run.err
    assert all(re.match(r"^/\S+:\d+ ?[\w.\[\]]*: \S", p) for p in problems), problems
    assert opened == [] and not (tmp_path / "store.db").exists()
    assert echoed == []
    assert check.err == run.err and run.out == check.out == ""


def test_s16_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = env_file(tmp_path, port=8089, token="987654321")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(GOOD)
    assert main(["check", "--env", str(env), "--config", str(tasks)]) == 2
    err = capsys.readouterr().err
    assert f"{env}:5 scheduler.api.token: must be a string" in err
    assert not any(s in err for s in SECRETS)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiosched", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_s16_in_a_real_process_nothing_opens(tmp_path: Path, figure: FigureRecorder) -> None:
    with socket.socket() as held:  # a port the test holds: a process that tried to bind it would fail on it
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = env_file(tmp_path, port=held.getsockname()[1])
        tasks = tmp_path / "tasks.yaml"
        tasks.write_text(CASES["minute 60"][0])
        bad = cli("run", "--env", str(env), "--config", str(tasks))
        created = (tmp_path / "store.db").exists()
        tasks.write_text(GOOD)  # the control: the same settings with a valid config
        good = cli("run", "--env", str(env), "--config", str(tasks))
    figure("S16", "real process, bad config: exit; store file created", f"{bad.returncode}; {created}", "2; False")
    figure("S16", "real process, valid config (control): exit; store file created", good.returncode, "1 (port taken)")
    assert bad.returncode == 2 and "tasks.echo.args.minute" in bad.stderr
    assert "address" not in bad.stderr.lower()
    assert not created
    assert good.returncode == 1 and "address already in use" in good.stderr.lower()  # it did reach the port
    assert "OSError" not in good.stderr  # reported as one error line, not as a crash with a traceback
    assert (tmp_path / "store.db").exists()  # ... after opening the store
    assert not any(s in bad.stderr + good.stderr for s in SECRETS)
