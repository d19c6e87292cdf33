"""The real CLI in subprocesses, with real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiosched", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(
        "scheduler:\n  timezone: Asia/Shanghai\n  tasks_package: tests.cli_tasks\n  store: memory://\n"
        "  shutdown_grace: 10\n"
    )
    return path


@pytest.mark.parametrize("tasks_file", sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "env.yaml"))
def test_check_accepts_the_shipped_configs(tasks_file: str) -> None:
    done = cli("check", "--config", f"config/{tasks_file}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok:")


BROKEN = {
    "syntax": ("tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1\n", r":5 ?: bad YAML"),
    "trigger": ("tasks:\n  echo:\n    trigger: cronn\n", r":3 tasks\.echo\.trigger: unknown trigger type 'cronn'"),
    "hour": ("tasks:\n  echo:\n    trigger: cron\n    args:\n      hour: 25\n", r":5 tasks\.echo\.args\.hour: "),
    "key": (
        "tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n    max_attempt: 3\n",
        r":5 tasks\.echo\.max_attempt: unknown key \(did you mean 'max_attempts'\?\)",
    ),
    "module": (
        "tasks:\n  nope:\n    trigger: interval\n    args: {seconds: 1}\n",
        r":2 tasks\.nope: no task module tests\.cli_tasks\.nope",
    ),
    "type": (
        "tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n    max_instances: lots\n",
        r":5 tasks\.echo\.max_instances: must be an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_broken_configs(case: str, tmp_path: Path, env_file: Path) -> None:
    text, pattern = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    done = cli("check", "--env", str(env_file), "--config", str(path))
    assert done.returncode == 2
    assert re.search(re.escape(str(path)) + pattern, done.stderr), done.stderr
    assert done.stdout == ""


def test_check_lists_every_problem(tmp_path: Path, env_file: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "tasks:\n"
        "  a: {module: echo, trigger: cronn}\n"
        "  b: {module: echo, trigger: cron, args: {hour: 25}}\n"
        "  c: {module: echo, trigger: interval, args: {seconds: 1}, max_attempt: 3}\n"
        "  d: {module: echo, trigger: interval, args: {seconds: 1}, max_instances: lots}\n"
        "  nope: {trigger: interval, args: {seconds: 1}}\n"
    )
    done = cli("check", "--env", str(env_file), "--config", str(path))
    assert done.returncode == 2
    lines = [line.strip() for line in done.stderr.splitlines() if str(path) in line]
    assert [line.split(" ")[0].rsplit(":", 1)[1] for line in lines] == ["2", "3", "4", "5", "6"], done.stderr


def test_next_previews_weekday_mornings() -> None:
    done = cli("next", "daily_report", "-n", "5")
    assert done.returncode == 0, done.stderr
    times = [datetime.fromisoformat(line) for line in done.stdout.split()]
    assert len(times) == 5
    assert all(t.hour == 9 and t.minute == 0 and t.weekday() < 5 for t in times)
    assert all(t.utcoffset() is not None and t.utcoffset().total_seconds() == 8 * 3600 for t in times)  # type: ignore[union-attr]
    assert times == sorted(times)


def test_list_shows_each_task() -> None:
    done = cli("list")
    assert done.returncode == 0, done.stderr
    for name in ("data_sync", "daily_report", "system_cleanup", "health_check"):
        assert name in done.stdout


def test_run_once_prints_the_result(tmp_path: Path, env_file: Path) -> None:
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  echo:\n    trigger: cron\n    args: {hour: 3}\n    kwargs: {who: world}\n")
    done = cli("run-once", "echo", "--env", str(env_file), "--config", str(tasks))
    assert done.returncode == 0, done.stderr
    assert "{'echo': {'who': 'world'}}" in done.stdout
    missing = cli("run-once", "nope", "--env", str(env_file), "--config", str(tasks))
    assert missing.returncode == 2 and "no task 'nope'" in missing.stderr


def test_no_config_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiosched", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and "no config" in done.stderr


def _start(tmp_path: Path, env_file: Path, seconds: float) -> tuple[subprocess.Popen[str], Path, Path]:
    markers = tmp_path / "markers"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        f"tasks:\n  slow:\n    trigger: interval\n    args: {{seconds: 1}}\n"
        f"    kwargs: {{marker_dir: '{markers}', seconds: {seconds}}}\n"
    )
    log = tmp_path / "log.txt"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiosched", "run", "--env", str(env_file), "--config", str(tasks)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    return proc, markers, log


def test_run_fires_and_sigterm_waits_for_the_running_task(tmp_path: Path, env_file: Path) -> None:
    proc, markers, log = _start(tmp_path, env_file, seconds=1.5)
    try:
        wait_for(lambda: any(markers.glob("start-*")) if markers.exists() else False)
        assert not any(markers.glob("end-*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
    assert any(markers.glob("end-*")), "the running task was not allowed to finish"
    frozen = int(next(markers.glob("start-*")).read_text().rsplit(" ", 1)[1])
    assert frozen > 1000, "start-up objects were not moved out of the cyclic GC's way"
    text = log.read_text()
    assert "run start: slow" in text and "state=succeeded" in text
    assert "SIGTERM: shutting down" in text and "scheduler shut down" in text


def test_second_signal_cancels_at_once(tmp_path: Path, env_file: Path) -> None:
    proc, markers, log = _start(tmp_path, env_file, seconds=60)
    try:
        wait_for(lambda: any(markers.glob("start-*")) if markers.exists() else False)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down" in log.read_text())
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "state=cancelled" in text and "second signal" in text
    assert not any(markers.glob("end-*"))


def test_run_serves_the_api_and_dashboard(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = tmp_path / "env.yaml"
    env.write_text(
        f"scheduler:\n  tasks_package: tests.cli_tasks\n  store: memory://\n  api: {{enabled: true, port: {port}}}\n"
    )
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 1}\n")
    log = tmp_path / "log.txt"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiosched", "run", "--env", str(env), "--config", str(tasks)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "management API and dashboard on" in log.read_text())
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
            assert json.load(answer)["status"] == "ok"
        request = urllib.request.Request(f"{base}/scheduler/jobs/echo/pause", method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{base}/scheduler/jobs/echo", timeout=5) as answer:
            assert json.load(answer)["paused"] is True
        with urllib.request.urlopen(f"{base}/", timeout=5) as answer:
            assert b"<html" in answer.read().lower()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()


def test_check_refuses_an_open_api_without_token(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text("scheduler:\n  tasks_package: tests.cli_tasks\n  api: {enabled: true, host: 0.0.0.0}\n")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  echo: {trigger: interval, args: {seconds: 1}}\n")
    done = cli("check", "--env", str(env), "--config", str(tasks))
    assert done.returncode == 2
    assert "scheduler.api.host" in done.stderr and "api.token" in done.stderr
