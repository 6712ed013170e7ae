"""The layered configuration loader: base -> env layer -> overrides, with clear errors."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from sparkvision.config import DEFAULT_CONF_DIR, Config, ConfigError, load_config


def _conf(tmp_path: Path, layers: dict[str, dict[str, str]]) -> Path:
    """A conf folder: {layer: {file name: YAML text}}."""
    for layer, files in layers.items():
        (tmp_path / layer).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (tmp_path / layer / name).write_text(textwrap.dedent(text).lstrip())
    return tmp_path


BASE = {
    "base": {
        "train.yaml": """
            train:
              epochs: 5
              batch_size: 4
              model: vae
            """,
        "spark.yaml": """
            spark:
              master: local[2]
              conf:
                spark.sql.shuffle.partitions: "8"
                spark.ui.enabled: "false"
            """,
    },
    "small": {
        "small.yaml": """
            train:
              epochs: 2
            spark:
              conf:
                spark.sql.shuffle.partitions: "2"
            """,
    },
}


def test_env_layer_overrides_base_key_by_key(tmp_path: Path) -> None:
    root = _conf(tmp_path, BASE)
    base, small = load_config("base", conf_dir=root), load_config("small", conf_dir=root)
    assert (base.train.epochs, base.train.batch_size) == (5, 4)
    assert (small.train.epochs, small.train.batch_size) == (2, 4), "keys not in the layer keep base values"
    assert small.spark.conf == {"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"}
    assert small.env == "small"
    assert small.train.learning_rate == Config().train.learning_rate, "keys in no file keep the defaults"


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["train.epochs=3"], lambda c: c.train.epochs == 3),
        (["train.learning_rate=0.01"], lambda c: c.train.learning_rate == 0.01),
        (["train.attributes=[Smiling, Male]"], lambda c: c.train.attributes == ("Smiling", "Male")),
        (["ingest.split_fractions=[0.7, 0.2, 0.1]"], lambda c: c.ingest.split_fractions == (0.7, 0.2, 0.1)),
        (["ingest.crop=bbox"], lambda c: c.ingest.crop == "bbox"),
        (["train.pictures=false"], lambda c: c.train.pictures is False),
        (["mlflow.tracking_uri="], lambda c: c.mlflow.tracking_uri == ""),
        (
            ["spark.conf.spark.executor.memory=1g", "spark.conf.spark.sql.shuffle.partitions=3"],
            lambda c: c.spark.conf["spark.executor.memory"] == "1g"
            and c.spark.conf["spark.sql.shuffle.partitions"] == "3",
        ),
        (["train.epochs=3", "train.epochs=4"], lambda c: c.train.epochs == 4),
        (["train.horovod_cycle_time_ms=5"], lambda c: c.train.horovod_cycle_time_ms == 5.0),
        (["train.horovod_cycle_time_ms=auto"], lambda c: c.train.horovod_cycle_time_ms == "auto"),
    ],
)
def test_overrides_apply_over_the_layers(tmp_path: Path, overrides: list[str], check) -> None:
    cfg = load_config("small", overrides, conf_dir=_conf(tmp_path, BASE))
    assert check(cfg), cfg
    assert cfg.spark.conf["spark.ui.enabled"] == "false", "a spark.conf override keeps the other conf keys"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=3"], r"unknown key 'epoch' in TrainConfig; did you mean 'epochs'\?"),
        (["trian.epochs=3"], r"unknown key 'trian' in Config; did you mean 'train'\?"),
        (["train.epochs=0"], r"train.epochs: expected a value in \[1, 100000\], found 0"),
        (["mlflow.port=70000"], r"mlflow.port: expected a value in \[0, 65535\], found 70000"),
        (["train.dropout=-0.1"], r"train.dropout: expected a value in \[0.0, 0.99\], found -0.1"),
        (["train.epochs=three"], r"train.epochs: expected an integer, found 'three'"),
        (["train.epochs=true"], r"train.epochs: expected an integer, found True"),
        (["train.learning_rate=fast"], r"train.learning_rate: expected a number, found 'fast'"),
        (["train.pictures=1"], r"train.pictures: expected true/false, found 1"),
        (["train.attributes=Smiling"], r"train.attributes: expected a list, found 'Smiling'"),
        (["ingest.crop=center"], r"ingest.crop: expected one of .*; did you mean 'center_square'\?"),
        (["train.latent_dim=2.5"], r"train.latent_dim: expected an integer, found 2.5"),
        (
            ["train.horovod_cycle_time_ms=0"],
            r"train.horovod_cycle_time_ms: expected a value in \[0.1, 1000.0\], found 0.0",
        ),
        (["train.horovod_cycle_time_ms=fast"], r"train.horovod_cycle_time_ms: expected .*, found 'fast'"),
        (["epochs"], r"override 'epochs': expected section.key=value"),
        (["epochs=3"], r"found no section in 'epochs'"),
        (["train.epochs.max=3"], r"'epochs' is not a mapping; use train.epochs=value"),
        (["train.epochs=[1"], r"override 'train.epochs=\[1': value is not valid YAML"),
    ],
)
def test_invalid_overrides_name_the_key_and_the_problem(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config("base", overrides)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train:\n  epoch: 3\n",
            r"bad.yaml: section 'train': unknown key 'epoch' in TrainConfig; did you mean 'epochs'\?",
        ),
        ("trains:\n  epochs: 3\n", r"bad.yaml: unknown key 'trains' in Config; did you mean 'train'\?"),
        ("- train\n", r"bad.yaml: expected a mapping of sections, found list"),
        ("train:\n  epochs: 3\n  batch_size: [4\nmlflow:\n  port: 1\n", r"bad.yaml:4: invalid YAML"),
        ("train:\n  epochs: 3\n\tbatch_size: 4\n", r"bad.yaml:3: invalid YAML"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    root = _conf(tmp_path, BASE)
    (root / "small" / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config("small", conf_dir=root)
    assert str(root / "small" / "bad.yaml") in str(info.value)


def test_missing_env_lists_the_available_ones(tmp_path: Path) -> None:
    root = _conf(tmp_path, BASE)
    with pytest.raises(
        ConfigError, match=r"configuration env 'smal' not found: no folder .*smal \(have: \['base', 'small'\]\)"
    ):
        load_config("smal", conf_dir=root)


def test_replace_returns_a_new_validated_copy() -> None:
    cfg = load_config("test")
    changed = cfg.replace(**{"train.epochs": "7", "train.model": "detector", "spark.conf.spark.x": "1"})
    assert (changed.train.epochs, changed.train.model, changed.spark.conf["spark.x"]) == (7, "detector", "1")
    assert (cfg.train.epochs, cfg.train.model) == (2, "vae"), "the original is unchanged"
    assert changed.env == cfg.env and changed.ingest == cfg.ingest
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.train.epochs = 1  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"replace\(\)|train.epochs: expected a value"):
        cfg.replace(**{"train.epochs": "0"})


def test_digest_is_stable_and_tracks_values() -> None:
    a, b = load_config("test"), load_config("test")
    assert a.digest() == b.digest() and len(a.digest()) == 64
    assert a.replace(**{"train.epochs": str(a.train.epochs)}).digest() == a.digest()
    assert a.replace(**{"train.epochs": "9"}).digest() != a.digest()
    assert a.replace(**{"spark.conf.spark.extra": "1"}).digest() != a.digest()
    assert dataclasses.replace(a, env="other").digest() == a.digest(), "env is not part of the digest"


def test_to_dict_round_trips_through_yaml() -> None:
    cfg = load_config("test")
    data = yaml.safe_load(cfg.to_yaml())
    assert data == cfg.to_dict()
    assert load_config("test", [f"train.attributes={data['train']['attributes']}"]).digest() == cfg.digest()


def test_every_key_is_documented_in_conf_base() -> None:
    """Adding a key means adding a commented line in conf/base (DEVELOPERS.md)."""
    documented: dict[str, set[str]] = {}
    for file in sorted((DEFAULT_CONF_DIR / "base").glob("*.yaml")):
        for section, values in (yaml.safe_load(file.read_text()) or {}).items():
            documented.setdefault(section, set()).update(values or {})
    for f in dataclasses.fields(Config):
        if f.name == "env":
            continue
        keys = {x.name for x in dataclasses.fields(getattr(Config(), f.name))}
        assert keys - documented.get(f.name, set()) == set(), f"undocumented keys of section {f.name}"


# Loader edge cases found in review.


def test_empty_section_in_a_layer_keeps_base_values(tmp_path: Path) -> None:
    root = _conf(tmp_path, {**BASE, "small": {"small.yaml": "train:\n"}})
    assert load_config("small", conf_dir=root).train.epochs == 5


def test_non_mapping_section_is_a_config_error(tmp_path: Path) -> None:
    root = _conf(tmp_path, {**BASE, "small": {"small.yaml": "train: 5\n"}})
    with pytest.raises(ConfigError, match="small.yaml"):
        load_config("small", conf_dir=root)


def test_env_is_not_a_settable_section() -> None:
    with pytest.raises(ConfigError):
        load_config("base", ["env.name=prod"])


@pytest.mark.parametrize("text", ["no", "on", "1e3", "true"])
def test_string_override_keeps_the_text(text: str) -> None:
    assert load_config("base", [f"train.alias={text}"]).train.alias == text


def test_unquoted_boolean_for_a_string_key_is_an_error(tmp_path: Path) -> None:
    root = _conf(tmp_path, {**BASE, "small": {"small.yaml": "train:\n  alias: no\n"}})
    with pytest.raises(ConfigError, match="quote it"):
        load_config("small", conf_dir=root)


@pytest.mark.parametrize(("text", "expected"), [('"no"', "no"), ("'a b'", "a b"), ('"x\\ty"', "x\ty")])
def test_quoted_string_override_is_unquoted(text: str, expected: str) -> None:
    assert load_config("base", [f"train.alias={text}"]).train.alias == expected


@pytest.mark.parametrize(("text", "expected"), [("1e-4", 1e-4), ("3E-2", 0.03), ("2", 2.0), ("0.5", 0.5)])
def test_float_keys_take_exponents_yaml_reads_as_text(text: str, expected: float) -> None:
    # YAML 1.1 reads "1e-4" (no dot) as a string; a learning rate is written that way.
    assert load_config("base", [f"train.learning_rate={text}"]).train.learning_rate == expected
