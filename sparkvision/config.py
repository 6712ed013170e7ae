"""Typed, frozen configuration loaded from ``conf/<env>`` layers plus ``key=value`` overrides.

Layers, lowest first: ``conf/base/*.yaml`` (committed), ``conf/<env>/*.yaml`` when ``env`` is
not ``base`` (``test`` is committed, ``local`` is git-ignored), then ``--set section.key=value``
overrides. Every file holds top-level sections; each section maps onto one frozen dataclass
below. Unknown keys fail with the nearest valid name; numbers are range-checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sparkvision.errors import did_you_mean

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF_DIR = PROJECT_ROOT / "conf"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names where and why."""


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SparkConfig:
    """How the SparkSession is built (``sparkvision.spark`` is the only reader)."""

    master: str = "local[2]"
    app_name: str = "sparkvision"
    log_level: str = "WARN"
    conf: Mapping[str, str] = field(default_factory=dict)
    gpu_discovery_script: str = ""


@dataclass(frozen=True)
class PathsConfig:
    """Where data, runs and services live; relative paths are resolved against ``root``."""

    root: str = "."
    data: str = "data"
    runs: str = "runs"
    store: str = "runs/store"
    mlflow: str = "runs/mlflow"


@dataclass(frozen=True)
class IngestConfig:
    """Decode, validate, crop, resize, tile and split images into Parquet."""

    image_size: int = field(default=128, metadata=_range(8, 2048))
    crop: Literal["center_square", "none", "bbox"] = "center_square"
    celeba_image_dir: str = "img_align_celeba"
    celeba_landmarks_file: str = "list_landmarks_align_celeba.txt"
    expected_size: Sequence[int] = ()
    allowed_modes: Sequence[str] = ("RGB", "L", "RGBA", "P")
    min_side: int = field(default=16, metadata=_range(1, None))
    exclude: Sequence[str] = ()
    tile_size: int = field(default=128, metadata=_range(8, 4096))
    tile_stride: int = field(default=128, metadata=_range(1, 4096))
    tile_resize: int = field(default=0, metadata=_range(0, 4096))
    min_defect_coverage: float = field(default=0.001, metadata=_range(0.0, 1.0))
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_by_identity: bool = False
    split_by_source_image: bool = True
    min_row_groups: int = field(default=8, metadata=_range(1, 100000))
    rows_per_row_group: int = field(default=512, metadata=_range(1, 10_000_000))
    png_compress_level: int = field(default=1, metadata=_range(0, 9))
    keep_versions: int = field(default=3, metadata=_range(1, 10_000))
    keep_min_age_hours: float = field(default=24.0, metadata=_range(0.0, None))


@dataclass(frozen=True)
class GenerateConfig:
    """Synthetic data sets written in the public on-disk formats."""

    celeba_count: int = field(default=2000, metadata=_range(1, 10_000_000))
    celeba_images_per_identity: int = field(default=8, metadata=_range(1, 1000))
    fabric_train_count: int = field(default=40, metadata=_range(1, 100_000))
    fabric_test_count: int = field(default=8, metadata=_range(0, 100_000))
    fabric_image_size: int = field(default=512, metadata=_range(64, 8192))
    photo_train_count: int = field(default=100, metadata=_range(1, 100_000))
    photo_crop: int = field(default=256, metadata=_range(16, 8192))
    photo_image_size: int = field(default=256, metadata=_range(16, 8192))
    photo_train_share: float = field(default=0.7, metadata=_range(0.05, 0.95))
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Horovod-on-Spark training; see conf/base/train.yaml for the meaning of each key."""

    model: str = "vae"
    workers: int = field(default=2, metadata=_range(1, 1024))
    epochs: int = field(default=10, metadata=_range(1, 100000))
    batch_size: int = field(default=32, metadata=_range(1, 65536))
    steps_per_epoch: int = field(default=0, metadata=_range(0, None))
    validation_steps: int = field(default=0, metadata=_range(0, None))
    learning_rate: float = field(default=5e-4, metadata=_range(0.0, 10.0))
    warmup_epochs: int = field(default=1, metadata=_range(0, 1000))
    lr_schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 42
    shuffle_buffer: int = field(default=1000, metadata=_range(0, 10_000_000))
    bn_calibration_batches: int = field(default=16, metadata=_range(0, 100_000))
    augment_flip: bool | Literal["auto"] = "auto"
    augment_shift: float = field(default=0.05, metadata=_range(0.0, 0.5))
    augment_color: float = field(default=0.1, metadata=_range(0.0, 1.0))
    early_stopping_patience: int = field(default=0, metadata=_range(0, 1000))
    reduce_lr_patience: int = field(default=0, metadata=_range(0, 1000))
    reduce_lr_factor: float = field(default=0.5, metadata=_range(0.0, 1.0))
    image_size: int = field(default=128, metadata=_range(8, 2048))
    latent_dim: int = field(default=200, metadata=_range(1, 100000))
    r_loss_factor: float = field(default=10000.0, metadata=_range(0.0, None))
    dropout: float = field(default=0.25, metadata=_range(0.0, 0.99))
    width: float = field(default=1.0, metadata=_range(0.05, 16.0))
    attributes: Sequence[str] = ()
    class_weights: bool = True
    detector_target: Literal["bbox", "landmarks"] = "bbox"
    anomaly_quantile: float = field(default=0.99, metadata=_range(0.5, 1.0))
    patch_size: int = field(default=64, metadata=_range(0, 4096))
    patches_per_epoch: int = field(default=4096, metadata=_range(0, None))
    simulated_defects: float = field(default=0.0, metadata=_range(0.0, 1.0))
    embedding_dim: int = field(default=128, metadata=_range(2, 4096))
    face_margin: float = field(default=0.25, metadata=_range(0.0, 1.0))
    face_scale: float = field(default=30.0, metadata=_range(1.0, 128.0))
    registered_model_prefix: str = "sparkvision"
    alias: str = "candidate"
    experiment: str = "sparkvision"
    heartbeat_timeout_s: float = field(default=600.0, metadata=_range(1.0, None))
    pictures: bool = True
    gpus_per_worker: int = field(default=0, metadata=_range(0, 1))
    mixed_precision: Literal[False, "mixed_float16"] = False
    horovod_cycle_time_ms: float | Literal["auto"] = field(default="auto", metadata=_range(0.1, 1000.0))


@dataclass(frozen=True)
class MlflowConfig:
    """The project's MLflow server; ``MLFLOW_TRACKING_URI`` overrides ``tracking_uri``."""

    host: str = "127.0.0.1"
    port: int = field(default=5000, metadata=_range(0, 65535))
    tracking_uri: str = ""
    start_timeout_s: float = field(default=90.0, metadata=_range(1.0, 3600.0))
    workers: int = field(default=1, metadata=_range(1, 64))


@dataclass(frozen=True)
class ScoreConfig:
    """Batch scoring with a registered model."""

    batch_size: int = field(default=64, metadata=_range(1, 65536))
    max_records_per_batch: int = field(default=256, metadata=_range(1, 1_000_000))
    incremental: bool = False
    partitions: int = field(default=0, metadata=_range(0, 100000))
    gpus_per_task: int = field(default=0, metadata=_range(0, 1))
    gpu_batch_size: int = field(default=256, metadata=_range(0, 65536))
    spark_conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FacesConfig:
    """Face identification from embedding vectors."""

    model_uri: str = ""
    threshold: float = field(default=-1.0, metadata=_range(-1.0, 1.0))
    target_far: float = field(default=0.05, metadata=_range(0.0, 1.0))
    gallery_images: int = field(default=2, metadata=_range(1, 1000))
    evaluate_far: float = field(default=0.01, metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class PromoteConfig:
    """The promotion gate (``sparkvision promote``): which test metric decides, which way, by how much."""

    metric: str = ""
    direction: Literal["auto", "max", "min"] = "auto"
    min_improvement: float = field(default=0.0, metadata=_range(0.0, None))
    floor: float | None = None
    eval_rows: int = field(default=4096, metadata=_range(1, 1_000_000))


@dataclass(frozen=True)
class InspectConfig:
    """Whole-image fabric inspection (``sparkvision inspect``)."""

    overlay_max_side: int = field(default=512, metadata=_range(16, 8192))
    report_overlays: int = field(default=6, metadata=_range(0, 100))
    max_boxes: int = field(default=8, metadata=_range(0, 1000))


@dataclass(frozen=True)
class ClusterConfig:
    """The local Spark standalone cluster started by ``sparkvision cluster up``."""

    host: str = "127.0.0.1"
    master_port: int = field(default=0, metadata=_range(0, 65535))
    workers: int = field(default=2, metadata=_range(1, 64))
    worker_cores: int = field(default=1, metadata=_range(1, 256))
    worker_memory: str = "2g"
    start_timeout_s: float = field(default=90.0, metadata=_range(1.0, 3600.0))


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration; pass each step only its own section."""

    env: str = "base"
    spark: SparkConfig = field(default_factory=SparkConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)

    def path(self, key: str) -> Path:
        """Absolute path of ``paths.<key>``, resolved against ``paths.root``."""
        root = Path(self.paths.root)
        if not root.is_absolute():
            root = (PROJECT_ROOT / root).resolve()
        value = Path(getattr(self.paths, key))
        return value if value.is_absolute() else root / value

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): YAML/JSON friendly."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """Stable SHA-256 of the resolved configuration (excluding ``env``): ``config_digest``."""
        return config_digest(self, exclude=("env",))

    @property
    def scoring_spark(self) -> SparkConfig:
        """The ``spark`` section of a scoring session: ``spark.conf`` with ``score.spark_conf`` over it."""
        return dataclasses.replace(self.spark, conf={**self.spark.conf, **self.score.spark_conf})

    def replace(self, **overrides: str) -> Config:
        """A copy with ``section.key=value`` string overrides applied (like ``--set``)."""
        raw = self.to_dict()
        env = raw.pop("env")
        for key, value in overrides.items():
            _apply_override(raw, f"{key}={value}")
        return _build(raw, env, source="replace()")


# --------------------------------------------------------------------------- loading


def config_digest(section: Any, exclude: Sequence[str] = ()) -> str:
    """Stable SHA-256 of a configuration dataclass (``Config`` or one section).

    The one configuration hash: ``Config.digest`` (run records, MLflow params) and the ingest
    manifest's ``config_hash`` are both this function, so equal settings give equal hashes
    across runs and machines.

    Args:
        section: A frozen configuration dataclass.
        exclude: Top-level fields left out (``Config.digest`` leaves out ``env``).

    Returns:
        The hex digest of the fields as sorted JSON.
    """
    data = json.loads(json.dumps(dataclasses.asdict(section), default=list))
    for name in exclude:
        data.pop(name, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def load_config(
    env: str = "base",
    overrides: Sequence[str] = (),
    conf_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Load ``conf/base`` then ``conf/<env>``, apply ``key=value`` overrides, validate.

    Args:
        env: The layer on top of base: ``test``, ``local`` or any folder under ``conf/``.
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars/lists.
        conf_dir: The folder holding ``base/`` and the env layers; default ``<project>/conf``.

    Returns:
        The frozen, validated configuration.

    Raises:
        ConfigError: On a missing env folder, bad YAML, an unknown key or an out-of-range value.
    """
    root = Path(conf_dir) if conf_dir else Path(os.environ.get("SPARKVISION_CONF", DEFAULT_CONF_DIR))
    layers = [root / "base"]
    if env != "base":
        if not (root / env).is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise ConfigError(f"configuration env '{env}' not found: no folder {root / env} (have: {known})")
        layers.append(root / env)
    raw: dict[str, Any] = {}
    for layer in layers:
        for file in sorted(layer.glob("*.yaml")):
            try:
                data = yaml.safe_load(file.read_text()) or {}
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{file}:{mark.line + 1}" if mark else str(file)
                raise ConfigError(f"{where}: invalid YAML: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{file}: expected a mapping of sections, found {type(data).__name__}")
            _check_keys(data, Config, str(file))
            for section, values in list(data.items()):
                if values is None:
                    del data[section]  # an empty `section:` line adds nothing
                elif not isinstance(values, dict):
                    raise ConfigError(
                        f"{file}: section '{section}' must be a mapping of keys, found {type(values).__name__} {values!r}"
                    )
            _deep_merge(raw, data)
    for item in overrides:
        _apply_override(raw, item)
    return _build(raw, env, source="overrides")


def _build(raw: dict[str, Any], env: str, source: str) -> Config:
    _check_keys(raw, Config, source)
    sections = {}
    for f in dataclasses.fields(Config):
        if f.name == "env":
            continue
        cls = _section_type(f)
        sections[f.name] = _make_section(cls, raw.get(f.name) or {}, f.name)
    return Config(env=env, **sections)


def _section_type(f: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(Config)
    return hints[f.name]


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "conf":
            _deep_merge(into[key], value)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected section.key=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise ConfigError(f"override '{item}': expected section.key=value, found no section in '{key}'")
    section, name = parts[0], parts[1]
    _check_keys({section: {name: None}}, Config, f"override '{item}'")
    if _field_type(section, name) is str or (section == "spark" and name == "conf"):
        value: Any = text.strip()  # keep text as typed: `no`, `on`, `1e3` stay strings
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = yaml.safe_load(value)  # an explicitly quoted string: unquote/unescape
    else:
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML: {exc}") from exc
    target = raw.setdefault(section, {})
    if section == "spark" and name == "conf" and len(parts) > 2:
        target.setdefault("conf", {})[".".join(parts[2:])] = str(value)
    elif len(parts) > 2:
        raise ConfigError(f"override '{item}': '{name}' is not a mapping; use {section}.{name}=value")
    else:
        target[name] = value


def _field_type(section: str, name: str) -> Any:
    section_type = typing.get_type_hints(Config)[section]
    return typing.get_type_hints(section_type).get(name)


def _check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    # `env` is chosen with --env, never set from a file or an override
    valid = [f.name for f in dataclasses.fields(cls) if not (cls is Config and f.name == "env")]
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"{where}: unknown key '{key}' in {cls.__name__}{did_you_mean(key, valid, 'keys')}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
            _check_keys(value, sub, f"{where}: section '{key}'")


def _make_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        kwargs[f.name] = _coerce(values[f.name], hints[f.name], f"{section}.{f.name}")
        lo, hi = f.metadata.get("range", (None, None))
        v = kwargs[f.name]
        if isinstance(v, str):  # a word a numeric key also takes ("auto"): checked by _coerce
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{section}.{f.name}: expected a value in {bounds}, found {v!r}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: expected one of {list(args)}, found {value!r}{did_you_mean(value, args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: expected {tp}, found {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name}: expected null, found {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true/false, found {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads ``1e-4`` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(
                f"{name}: expected a string, found the boolean {value!r} (YAML reads yes/no/on/off as booleans: quote it)"
            )
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, found {value!r}")
        return "" if value is None else str(value)
    if origin in (Sequence, list, tuple, typing.Sequence) or (origin is not None and origin.__name__ == "Sequence"):
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, found {value!r}")
        return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)) if args else tuple(value)
    if origin in (Mapping, dict) or (origin is not None and origin.__name__ == "Mapping"):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, found {value!r}")
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    return value
