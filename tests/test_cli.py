"""The console script and the spark-submit entry points are one parser, built from the command table."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparkvision.cli import main
from sparkvision.commands import COMMANDS, Command

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))


@pytest.mark.parametrize("job", JOBS)
def test_job_forwards_to_the_same_command(job: str) -> None:
    source = (ROOT / "jobs" / f"{job}.py").read_text()
    assert "spark-submit" in source.split('"""')[1], "the docstring shows the spark-submit line"
    assert len(source.splitlines()) < 40
    assert job in COMMANDS
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith(f"usage: sparkvision {job}")


def test_the_parser_lists_every_command_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    listed_names = [line.split()[0] for line in listed.splitlines() if re.match(r"    \S", line)]
    assert listed_names == list(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS.values(), ids=list(COMMANDS))
def test_every_command_takes_env_set_and_verbosity(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command.name, "--help"]) == 0
    usage = capsys.readouterr().out
    for option in ("--env", "--set", "--verbose", "--debug", *(a.option for a in command.args if not a.positional)):
        assert option in usage, option


@pytest.mark.parametrize("command", COMMANDS.values(), ids=list(COMMANDS))
def test_the_spec_matches_the_function(command: Command) -> None:
    params = inspect.signature(command.run).parameters
    names = [p for p in params if p not in ("cfg", "env", "overrides")]
    assert names == [a.name for a in command.args]
    for arg in command.args:
        p = params[arg.name]
        assert (p.default is inspect.Parameter.empty) == arg.required, arg.name
        if not arg.required:
            assert p.default == arg.default or (arg.type is list and tuple(p.default) == tuple(arg.default)), arg.name
    assert ("cfg" in params) == command.config


def test_config_show_prints_the_resolved_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--env", "test", "--set", "train.epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7
    assert shown["ingest"]["image_size"] == 32  # from conf/test
    assert shown["ingest"]["crop"] == "center_square"  # from conf/base


def test_importing_the_pipeline_runner_does_not_import_the_cli() -> None:
    code = "import sparkvision.pipeline, sys; print('sparkvision.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"
