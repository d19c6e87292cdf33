"""Config loading and validation: every problem with file, line and key path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aiosched import ConfigError, FakeClock, Scheduler
from aiosched.app import build_scheduler, install_tasks
from aiosched.config import load_config

from .conftest import START

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
scheduler:
  timezone: Asia/Shanghai
  tasks_package: tests.cli_tasks
  job_defaults: {coalesce: false, max_instances: 3, misfire_grace_time: 30}
tasks:
  echo:
    trigger: cron
    args: {hour: 9, minute: 0, day_of_week: mon-fri}
    kwargs: {who: world}
    max_attempts: 3
    retry_delay: 10
  echo_again:
    module: echo
    trigger: interval
    args: {seconds: 5}
    executor: threadpool
"""


def test_good_config_resolves_tasks(tmp_path: Path) -> None:
    config = load_config([write(tmp_path, "all.yaml", GOOD)])
    assert config.timezone == "Asia/Shanghai"
    assert [t.id for t in config.tasks] == ["echo", "echo_again"]
    echo = config.task("echo")
    assert echo.task_ref == "tests.cli_tasks.echo:run"
    assert echo.kwargs == {"who": "world"}
    assert echo.options == {"max_attempts": 3, "retry_delay": 10}
    assert config.task("echo_again").task_ref == "tests.cli_tasks.echo:run"
    assert config.job_defaults == {"coalesce": False, "max_instances": 3, "misfire_grace_time": 30}


def test_two_files_env_and_tasks(tmp_path: Path) -> None:
    env = write(tmp_path, "env.yaml", "scheduler:\n  timezone: UTC\n  tasks_package: tests.cli_tasks\n")
    tasks = write(tmp_path, "dev.yaml", "tasks:\n  echo: {trigger: interval, args: {seconds: 1}}\n")
    config = load_config([env, tasks])
    assert config.timezone == "UTC" and config.task("echo").trigger == "interval"


def test_env_var_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_SECONDS", "7")
    text = (
        "scheduler:\n  tasks_package: tests.cli_tasks\n  store: ${STORE_URL:-memory://}\n"
        "tasks:\n  echo: {trigger: interval, args: {seconds: ${ECHO_SECONDS}}}\n"
    )
    config = load_config([write(tmp_path, "c.yaml", text)])
    assert config.store == "memory://"
    assert config.task("echo").args == {"seconds": 7}


def test_missing_env_var_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "scheduler:\n  tasks_package: tests.cli_tasks\n  node_id: ${NO_SUCH_VAR_XYZ}\n")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert f"{path}:3" in str(info.value) and "NO_SUCH_VAR_XYZ" in str(info.value)


BROKEN = """\
scheduler:
  timezone: Mars/Olympus
  tasks_package: tests.cli_tasks
  executors: {default_threads: many}
  job_defaults: {max_instanses: 2}
  api: {token: 12345, port: 99999}
tasks:
  bad_hour:
    module: echo
    trigger: cron
    args: {hour: 25}
  bad_type:
    module: echo
    trigger: cronn
  bad_key:
    module: echo
    trigger: interval
    args: {seconds: 1}
    retry_dealy: 5
  bad_value:
    module: echo
    trigger: interval
    args: {seconds: 1}
    max_attempts: "three"
    timeout: -1
  gpu:
    module: echo
    trigger: interval
    args: {seconds: 1}
    executor: gpu
  missing: {trigger: interval, args: {seconds: 1}}
  nothing: {trigger: interval, args: {seconds: 1}}
  broken: {trigger: interval, args: {seconds: 1}}
"""


def test_every_problem_is_reported_with_file_line_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", BROKEN)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    found = {str(p).split(" ", 1)[0].split(":")[-1] + " " + p.path: p.message for p in info.value.problems}
    expected = {
        "2 scheduler.timezone": "unknown time zone",
        "4 scheduler.executors.default_threads": "positive integer",
        "5 scheduler.job_defaults.max_instanses": "did you mean 'max_instances'",
        "6 scheduler.api.port": "65535",
        "11 tasks.bad_hour.args.hour": "25",
        "14 tasks.bad_type.trigger": "did you mean 'cron'",
        "19 tasks.bad_key.retry_dealy": "did you mean 'retry_delay'",
        "24 tasks.bad_value.max_attempts": "integer",
        "25 tasks.bad_value.timeout": "positive",
        "30 tasks.gpu.executor": "unknown executor 'gpu'",
        "31 tasks.missing": "no task module tests.cli_tasks.missing",
        "32 tasks.nothing": "no run() function and no BaseTask",
        "33 tasks.broken": "broken on purpose",
    }
    for key, words in expected.items():
        assert key in found, (key, sorted(found))
        assert words in found[key], (key, found[key])
    assert "12345" not in str(info.value)  # a token is never echoed


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("tasks:\n  echo:\n    trigger: [interval\n", 4, "bad YAML"),
        ("tasks:\n  echo: {trigger: interval, args: {seconds: 1}}\n  echo: {trigger: cron}\n", 3, "duplicate key"),
        ("scheduler: {tasks_package: tests.cli_tasks}\ntaskz: {}\n", 2, "did you mean 'tasks'"),
        ("tasks:\n  echo: 5\n", 2, "must be a mapping"),
    ],
)
def test_syntax_and_shape_problems(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(
        tmp_path, "c.yaml", "scheduler: {tasks_package: tests.cli_tasks}\n" + text if "scheduler" not in text else text
    )
    offset = 0 if "scheduler" in text else 1
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert any(p.line == line + offset and words in p.message for p in info.value.problems), info.value


def test_section_defined_twice(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "scheduler: {timezone: UTC}\n")
    b = write(tmp_path, "b.yaml", "scheduler: {timezone: UTC}\n")
    with pytest.raises(ConfigError, match="already defined in"):
        load_config([a, b])


def test_shipped_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    env = ROOT / "config" / "env.yaml"
    for tasks in sorted((ROOT / "config").glob("*.yaml")):
        if tasks != env:
            config = load_config([env, tasks])
            assert config.tasks, tasks


async def test_install_tasks_keeps_runtime_state_across_reloads(tmp_path: Path) -> None:
    clock = FakeClock(START)
    config = load_config([write(tmp_path, "c.yaml", GOOD)])
    scheduler = build_scheduler(config, clock=clock, store="memory://")
    await install_tasks(scheduler, config)
    await scheduler.pause_job("echo")
    await scheduler.add_job("tests.cli_tasks.echo:run", "interval", seconds=3, id="runtime_added")
    first = (await scheduler.get_job("echo_again")).next_fire_time
    clock.advance(2)
    changed = GOOD.replace("kwargs: {who: world}", "kwargs: {who: moon}").replace("  echo_again:\n", "  gone:\n")
    await install_tasks(scheduler, load_config([write(tmp_path, "c2.yaml", changed)]))
    echo = await scheduler.get_job("echo")
    assert echo.paused and echo.kwargs == {"who": "moon"}
    assert {j.id for j in await scheduler.get_jobs()} == {"echo", "gone", "runtime_added"}
    assert first is not None
    await install_tasks(scheduler, load_config([write(tmp_path, "c3.yaml", GOOD)]))
    again = await scheduler.get_job("echo_again")
    assert again.next_fire_time == START + timedelta(seconds=2 + 5)  # a new schedule: from now
    await scheduler.shutdown()


async def test_install_keeps_next_fire_time_when_the_trigger_is_unchanged(tmp_path: Path) -> None:
    clock = FakeClock(START)
    config = load_config([write(tmp_path, "c.yaml", GOOD)])
    scheduler = Scheduler(timezone="UTC", clock=clock)
    await install_tasks(scheduler, config)
    before = (await scheduler.get_job("echo_again")).next_fire_time
    clock.advance(3)
    await install_tasks(scheduler, load_config([write(tmp_path, "c.yaml", GOOD)]))
    assert (await scheduler.get_job("echo_again")).next_fire_time == before
    moved = GOOD.replace("args: {seconds: 5}", "args: {seconds: 50}")
    await install_tasks(scheduler, load_config([write(tmp_path, "c.yaml", moved)]))
    assert (await scheduler.get_job("echo_again")).next_fire_time == START + timedelta(seconds=53)
    await scheduler.shutdown()
