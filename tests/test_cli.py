"""The console script and the spark-submit entry points are one parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparkvision.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))


@pytest.mark.parametrize("job", JOBS)
def test_job_forwards_to_the_same_command(job: str) -> None:
    source = (ROOT / "jobs" / f"{job}.py").read_text()
    assert "spark-submit" in source.split('"""')[1], "the docstring shows the spark-submit line"
    assert len(source.splitlines()) < 40
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith(f"usage: sparkvision {job}")


def test_every_command_takes_env_and_set() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        flags = {o for a in parser._actions for o in a.option_strings}
        assert {"--env", "--set"} <= flags, name


def test_config_show_prints_the_resolved_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--env", "test", "--set", "train.epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7
    assert shown["ingest"]["image_size"] == 32  # from conf/test
    assert shown["ingest"]["crop"] == "center_square"  # from conf/base


def test_configuration_error_exits_2_with_nearest_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "ingest.image_sise=64"]) == 2
    assert "did you mean 'image_size'" in capsys.readouterr().err
