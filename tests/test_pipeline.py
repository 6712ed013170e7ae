"""Pipeline files: validation reports every problem with file and line; runs execute real command steps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sparkvision.commands import COMMANDS
from sparkvision.config import PROJECT_ROOT
from sparkvision.pipeline import PipelineError, StepFailedError, load_pipeline, run_pipeline

SHOW = "{command: config, args: {action: show}}"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture()
def tmp_sets(tmp_path: Path) -> list[str]:
    """Command-line overrides keeping records and servers under ``tmp_path``."""
    return [f"paths.runs={tmp_path / 'runs'}", f"paths.mlflow={tmp_path / 'mlflow'}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            name: p
            steps:
              - {name: a, command: config, args: {action: show}, needs: [b]}
              - {name: b, command: config, args: {action: show}, needs: [c]}
              - {name: c, command: config, args: {action: show}, needs: [a]}
            """,
            r"pipe.yaml:3: dependency cycle: a -> b -> c -> a",
            id="cycle",
        ),
        pytest.param(
            """
            name: p
            steps:
              - name: generate
                command: config
                args: {action: show}
              - name: show
                command: config
                args: {action: show}
                needs: [genrate]
            """,
            r"pipe.yaml:6: step 'show': needs unknown step 'genrate'; did you mean 'generate'\?",
            id="unknown-need",
        ),
        pytest.param(
            """
            name: p
            steps:
              - name: show
                comand: config
            """,
            r"pipe.yaml:3: step 'show': unknown key 'comand'; did you mean 'command'\?",
            id="unknown-step-key",
        ),
        pytest.param(
            """
            name: p
            stepz: []
            steps: [{name: a, command: config, args: {action: show}}]
            """,
            r"pipe.yaml:1: pipeline: unknown key 'stepz'; did you mean 'steps'\?",
            id="unknown-top-key",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: load, command: ingset, args: {format: celeba}}
            """,
            r"pipe.yaml:3: step 'load': unknown command 'ingset'; did you mean 'ingest'\?",
            id="unknown-command",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: generate, args: {dataset: celeba, cout: 4}}
            """,
            r"(?s)pipe.yaml:3: step 'gen': unknown argument 'cout' of command 'generate'; did you mean 'count'\?"
            r".*pipe.yaml:3: step 'gen': command 'generate' expects argument\(s\) out under 'args', found none",
            id="unknown-and-missing-arguments",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: generate, args: {dataset: celebb, out: x}}
            """,
            r"step 'gen': argument 'dataset' of command 'generate': expected one of celeba, fabric, aitex, photos, "
            r"found 'celebb'; did you mean 'celeba'\?",
            id="bad-choice",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: generate, args: {dataset: celeba, out: x, count: many}}
            """,
            r"step 'gen': argument 'count' of command 'generate': expected an integer, found 'many'",
            id="bad-type",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: [generate, celeba, --out, x]}
            """,
            r"step 'gen': 'command' is a command name with its arguments under 'args'",
            id="old-argv-form",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: nested, command: pipeline, args: {file: other.yaml}}
            """,
            r"step 'nested': a step cannot run 'pipeline'; list its steps here instead",
            id="no-nested-pipeline",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: gen, command: generate, args: {dataset: celeba, out: "${dta}/x"}}
            """,
            r"step 'gen': unknown variable '\$\{dta\}'; did you mean 'data'\?",
            id="unknown-variable",
        ),
        pytest.param(
            f"""
            name: p
            steps:
              - {{name: show, set: [train.epoch=3], {SHOW[1:-1]}}}
            """,
            r"step 'show': override 'train.epoch=3'.*did you mean 'epochs'\?",
            id="unknown-config-key",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: look, python: "sparkvision.results:where_to_lok"}
              - {name: look2, python: "sparkvision.results:where_to_look", args: {report: x}}
            """,
            r"(?s)2 problem\(s\).*cannot load sparkvision.results:where_to_lok.*'report'; did you mean 'reports'\?",
            id="python-target-and-args",
        ),
        pytest.param(
            f"""
            name: p
            steps:
              - {{name: a, {SHOW[1:-1]}}}
              - {{name: a, {SHOW[1:-1]}}}
            """,
            r"pipe.yaml:4: step 'a': duplicate name \(first defined on line 3\)",
            id="duplicate",
        ),
        pytest.param(
            """
            name: p
            steps:
              - {name: a, command: config
            """,
            r"pipe.yaml:\d+: invalid YAML",
            id="invalid-yaml",
        ),
    ],
)
def test_validation_errors_name_file_line_and_fix(
    tmp_path: Path, tmp_sets: list[str], text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PipelineError, match=expected):
        run_pipeline(path, env="test", overrides=tmp_sets)
    assert not (tmp_path / "runs" / "pipelines").exists(), "nothing runs before the whole file is valid"


@pytest.mark.parametrize("name", ["demo.yaml", "nightly.yaml"])
def test_shipped_pipelines_are_valid(name: str) -> None:
    pipeline = load_pipeline(PROJECT_ROOT / "pipelines" / name)
    names = [s.name for s in pipeline.steps]
    for i, step in enumerate(pipeline.steps):
        assert all(names.index(n) < i for n in step.needs), f"{step.name} runs before what it needs"
        assert "${" not in json.dumps(dict(step.args))
        if step.command:
            required = {a.name for a in COMMANDS[step.command].args if a.required}
            assert required <= set(step.args), step.name


def test_overrides_are_layered_file_then_step_then_command_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
        name: layers
        set: [train.epochs=7, train.batch_size=4]
        steps:
          - {{name: plain, {SHOW[1:-1]}}}
          - {{name: own, set: [train.epochs=9, train.seed=5], {SHOW[1:-1]}}}
        """,
    )
    plain, own = load_pipeline(path, env="test", overrides=["train.seed=3"]).steps
    assert (plain.cfg.train.epochs, plain.cfg.train.batch_size, plain.cfg.train.seed) == (7, 4, 3)
    assert (own.cfg.train.epochs, own.cfg.train.batch_size, own.cfg.train.seed) == (9, 4, 3)
    assert own.cfg.env == "test" and own.cfg.ingest.image_size == 32, "the env layer is under every step"


def test_run_executes_steps_in_order_and_writes_a_record(
    tmp_path: Path, tmp_sets: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        """
        name: tiny
        env: test
        vars:
          out: "${runs}/gen"
        set: [train.epochs=7]
        steps:
          - name: show-config
            command: config
            args: {action: show}
            needs: [generate]
          - name: generate
            command: generate
            args: {dataset: celeba, count: "4", out: "${out}/celeba"}
        """,
    )
    records = run_pipeline(path, overrides=tmp_sets)

    assert [(r["name"], r["status"]) for r in records] == [("generate", "ok"), ("show-config", "ok")]
    images = sorted((tmp_path / "runs" / "gen" / "celeba" / "img_align_celeba").iterdir())
    assert len(images) == 4
    out = capsys.readouterr().out
    assert "[1/2] generate ..." in out and "[2/2] show-config done in" in out
    assert "epochs: 7" in out, "the file's set reaches the step"
    assert f"runs: {tmp_path / 'runs'}" in out, "the command line's --set reaches the step"
    assert "# env: test" in out, "the file's env is the steps' layer"
    (record_file,) = (tmp_path / "runs" / "pipelines").glob("tiny-*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok" and record["env"] == "test"
    assert [s["status"] for s in record["steps"]] == ["ok", "ok"]
    generate = record["steps"][0]
    assert generate["command"] == "generate"
    assert generate["args"] == {"dataset": "celeba", "count": 4, "out": str(tmp_path / "runs" / "gen" / "celeba")}
    assert (
        generate["command_line"]
        == f"sparkvision generate celeba --out {tmp_path / 'runs' / 'gen' / 'celeba'} --count 4"
    )
    assert generate["overrides"] == ["train.epochs=7", *tmp_sets]


def test_failing_step_stops_the_pipeline(
    tmp_path: Path, tmp_sets: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        f"""
        name: failing
        steps:
          - {{name: show, {SHOW[1:-1]}}}
          - {{name: status, command: mlflow, args: {{action: status}}, needs: [show]}}
          - {{name: after, needs: [status], {SHOW[1:-1]}}}
        """,
    )
    with pytest.raises(
        StepFailedError, match=r"stopped at step 'status' \(.*pipe.yaml:4\).*exited with code 1"
    ) as info:
        run_pipeline(path, env="test", overrides=tmp_sets)
    assert "`sparkvision mlflow status` exited with code 1" in str(info.value)
    assert "not run: after" in str(info.value)
    assert "--only status --only after" in str(info.value)
    assert "[2/3] status FAILED after" in capsys.readouterr().out
    (record_file,) = (tmp_path / "runs" / "pipelines").glob("failing-*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "failed"
    assert [s["status"] for s in record["steps"]] == ["ok", "failed", "not_run"]


def test_a_user_error_in_a_step_is_its_one_line_message(tmp_path: Path, tmp_sets: list[str]) -> None:
    path = _write(
        tmp_path,
        """
        name: missing
        steps:
          - {name: load, command: ingest, args: {format: celeba, input: /no/such/dir, output: "${runs}/x"}}
        """,
    )
    with pytest.raises(StepFailedError) as info:
        run_pipeline(path, env="test", overrides=tmp_sets)
    first = info.value.lines()[0]
    assert first.endswith("--input /no/such/dir: expected a folder, found no such file or directory")
    assert "Traceback" not in str(info.value)


def test_only_runs_the_named_steps(tmp_path: Path, tmp_sets: list[str]) -> None:
    path = _write(
        tmp_path,
        f"""
        name: partial
        steps:
          - {{name: gen, command: generate, args: {{dataset: celeba, count: 4, out: "${{runs}}/gen"}}}}
          - {{name: show, needs: [gen], {SHOW[1:-1]}}}
        """,
    )
    records = run_pipeline(path, env="test", overrides=tmp_sets, only=["show"])
    assert [(r["name"], r["status"]) for r in records] == [("gen", "skipped"), ("show", "ok")]
    assert not (tmp_path / "runs" / "gen").exists()
    with pytest.raises(PipelineError, match=r"unknown step\(s\) 'sho'; did you mean 'show'\?"):
        run_pipeline(path, env="test", overrides=tmp_sets, only=["sho"])


def test_nightly_trains_promotes_and_scores_with_the_champion(
    tmp_path: Path, tmp_sets: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pipelines/nightly.yaml`` end to end at test sizes, on its own MLflow server (its `mlflow` step)."""
    from datetime import datetime

    import pyarrow.parquet as pq

    from sparkvision import tracking
    from sparkvision.data import publish
    from sparkvision.data.generators.celeba import generate_celeba, generate_new_images

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the session's server is not this pipeline's
    data = tmp_path / "data"
    generate_celeba(data / "incoming" / "celeba", count=96, seed=5, images_per_identity=4)
    date = datetime.now().strftime("%Y-%m-%d")
    generate_new_images(data / "uploads" / date, count=5, seed=2)
    sets = [*tmp_sets, f"paths.data={data}", f"paths.store={tmp_path / 'store'}", "train.workers=1",
            "train.epochs=1", "promote.floor=0"]  # fmt: skip  # floor 0: the first candidate of a tiny run wins
    try:
        records = run_pipeline(PROJECT_ROOT / "pipelines" / "nightly.yaml", env="test", overrides=sets)
        t = tracking.Tracking(tracking.tracking_uri(load_pipeline(PROJECT_ROOT / "pipelines" / "nightly.yaml",
                                                                  "test", sets).cfg))  # fmt: skip
        champion = t.alias_ref("sparkvision-attributes", "champion")
        candidate = t.alias_ref("sparkvision-attributes", "candidate")
    finally:
        tracking.stop_server(tmp_path / "mlflow")
    assert [(r["name"], r["status"]) for r in records] == [
        (n, "ok") for n in ("mlflow", "ingest", "train", "promote", "score", "report")
    ]
    out = capsys.readouterr().out
    assert "promoted sparkvision-attributes version 1 to @champion: first candidate" in out, out
    assert champion is not None and candidate is not None and champion.version == candidate.version == "1"
    rows = pq.read_table(publish.current(data / "scores" / "attributes" / date).location.path).to_pylist()
    assert len(rows) == 5 and {r["model_uri"] for r in rows} == {"models:/sparkvision-attributes/1"}
    (report,) = (tmp_path / "runs" / "reports" / f"nightly-{date}").glob("attributes-*.html")
    assert "<h2 id='promotion'>Promotion</h2>" in report.read_text()
