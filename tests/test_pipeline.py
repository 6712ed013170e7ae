"""Pipeline files: validation reports every problem with file and line; runs execute real CLI steps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sparkvision.config import PROJECT_ROOT, Config, load_config
from sparkvision.pipeline import PipelineError, load_pipeline, run_pipeline


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture()
def tmp_cfg(tmp_path: Path) -> Config:
    return load_config("test", [f"paths.runs={tmp_path / 'runs'}", f"paths.mlflow={tmp_path / 'mlflow'}"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            name: p
            steps:
              - {name: a, command: [config, show], needs: [b]}
              - {name: b, command: [config, show], needs: [c]}
              - {name: c, command: [config, show], needs: [a]}
            """,
            r"pipe.yaml:3: dependency cycle: a -> b -> c -> a",
            id="cycle",
        ),
        pytest.param(
            """
            name: p
            steps:
              - name: generate
                command: [config, show]
              - name: show
                command: [config, show]
                needs: [genrate]
            """,
            r"pipe.yaml:5: step 'show': needs unknown step 'genrate'; did you mean 'generate'\?",
            id="unknown-need",
        ),
        pytest.param(
            """
            name: p
            steps:
              - name: show
                comand: [config, show]
            """,
            r"pipe.yaml:3: step 'show': unknown key 'comand'; did you mean 'command'\?",
            id="unknown-step-key",
        ),
        pytest.param(
            """
            name: p
            stepz: []
            steps: [{name: a, command: [config, show]}]
            """,
            r"pipe.yaml:1: pipeline: unknown key 'stepz'; did you mean 'steps'\?",
            id="unknown-top-key",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: load, command: [ingset, --format, celeba]}
            """,
            r"pipe.yaml:3: step 'load': unknown command 'ingset'; did you mean 'ingest'\?",
            id="unknown-command",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: [generate, celeba, --cout, "4"]}
            """,
            r"step 'gen': invalid command line .*(required: --out|unrecognized arguments: --cout)",
            id="bad-arguments",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: [generate, celeba, --out, "${dta}/x"]}
            """,
            r"step 'gen': unknown variable '\$\{dta\}'; did you mean 'data'\?",
            id="unknown-variable",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: show, command: [config, show], set: [train.epoch=3]}
            """,
            r"step 'show': override 'train.epoch=3'.*did you mean 'epochs'\?",
            id="unknown-config-key",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: look, python: "sparkvision.pipeline:where_to_lok"}
              - {name: look2, python: "sparkvision.pipeline:where_to_look", args: {report: x}}
            """,
            r"(?s)2 problem\(s\).*cannot load sparkvision.pipeline:where_to_lok.*'report'; did you mean 'reports'\?",
            id="python-target-and-args",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: a, command: [config, show]}
              - {name: a, command: [config, show]}
            """,
            r"pipe.yaml:4: step 'a': duplicate name \(first defined on line 3\)",
            id="duplicate",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: a, command: [config, show]
            """,
            r"pipe.yaml:\d+: invalid YAML",
            id="invalid-yaml",
        ),
    ],
)
def test_validation_errors_name_file_line_and_fix(tmp_path: Path, tmp_cfg: Config, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PipelineError, match=expected):
        run_pipeline(path, tmp_cfg)
    assert not (tmp_path / "runs" / "pipelines").exists(), "nothing runs before the whole file is valid"


@pytest.mark.parametrize("name", ["demo.yaml", "nightly.yaml"])
def test_shipped_pipelines_are_valid(name: str) -> None:
    pipeline = load_pipeline(PROJECT_ROOT / "pipelines" / name, load_config("base"))
    names = [s.name for s in pipeline.steps]
    for i, step in enumerate(pipeline.steps):
        assert all(names.index(n) < i for n in step.needs), f"{step.name} runs before what it needs"
        assert "${" not in " ".join(step.command)


def test_run_executes_steps_in_order_and_writes_a_record(
    tmp_path: Path, tmp_cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        """
        name: tiny
        vars:
          out: "${runs}/gen"
        set: [train.epochs=7]
        steps:
          - name: show-config
            command: [config, show]
            needs: [generate]
          - name: generate
            command: [generate, celeba, --count, "4", --out, "${out}/celeba"]
        """,
    )
    records = run_pipeline(path, tmp_cfg)

    assert [(r["name"], r["status"]) for r in records] == [("generate", "ok"), ("show-config", "ok")]
    images = sorted((tmp_path / "runs" / "gen" / "celeba" / "img_align_celeba").iterdir())
    assert len(images) == 4
    out = capsys.readouterr().out
    assert "[1/2] generate ..." in out and "[2/2] show-config done in" in out
    assert "epochs: 7" in out, "the file's set reaches the step"
    assert f"runs: {tmp_path / 'runs'}" in out, "the command line's --set reaches the step"
    assert "# env: test" in out
    (record_file,) = (tmp_path / "runs" / "pipelines").glob("tiny-*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok" and record["env"] == "test"
    assert [s["status"] for s in record["steps"]] == ["ok", "ok"]
    assert record["steps"][0]["command"][-1] == str(tmp_path / "runs" / "gen" / "celeba")


def test_failing_step_stops_the_pipeline(tmp_path: Path, tmp_cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path,
        """
        name: failing
        steps:
          - {name: show, command: [config, show]}
          - {name: status, command: [mlflow, status], needs: [show]}
          - {name: after, command: [config, show], needs: [status]}
        """,
    )
    with pytest.raises(PipelineError, match=r"stopped at step 'status' \(.*pipe.yaml:4\).*exited with code 1") as info:
        run_pipeline(path, tmp_cfg)
    assert "not run: after" in str(info.value)
    assert "--only status --only after" in str(info.value)
    assert "[2/3] status FAILED after" in capsys.readouterr().out
    (record_file,) = (tmp_path / "runs" / "pipelines").glob("failing-*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "failed"
    assert [s["status"] for s in record["steps"]] == ["ok", "failed", "not_run"]


def test_only_runs_the_named_steps(tmp_path: Path, tmp_cfg: Config) -> None:
    path = _write(
        tmp_path,
        """
        name: partial
        steps:
          - {name: gen, command: [generate, celeba, --count, "4", --out, "${runs}/gen"]}
          - {name: show, command: [config, show], needs: [gen]}
        """,
    )
    records = run_pipeline(path, tmp_cfg, only=["show"])
    assert [(r["name"], r["status"]) for r in records] == [("gen", "skipped"), ("show", "ok")]
    assert not (tmp_path / "runs" / "gen").exists()
    with pytest.raises(PipelineError, match=r"unknown step\(s\) 'sho'; did you mean 'show'\?"):
        run_pipeline(path, tmp_cfg, only=["sho"])
