"""GPU settings and mixed precision that run without a GPU: Spark's GPU configuration, the Keras
policy, and the VAE trained under ``mixed_float16`` on CPU with a float32 loss.

Assigned GPU addresses reaching the ranks and scoring tasks: ``test_gpu_workers.py``."""

from __future__ import annotations

import numpy as np
import pytest

from sparkvision import devices
from sparkvision.config import Config, ConfigError
from sparkvision.spark import gpu_conf

SCRIPT = "/opt/gpus.sh"


@pytest.mark.parametrize(
    ("gpus", "script", "master", "expected"),
    [
        (0, SCRIPT, "yarn", {}),
        (1, SCRIPT, "local[2]", {}),  # local mode schedules no GPUs: a task asking for one never runs
        (1, SCRIPT, "yarn", {"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1",
                             "spark.executor.resource.gpu.discoveryScript": SCRIPT}),
        (1, "", "k8s://https://api:6443", {"spark.executor.resource.gpu.amount": "1",
                                           "spark.task.resource.gpu.amount": "1"}),
        (1, "", "local-cluster[1,2,1024]", {"spark.executor.resource.gpu.amount": "1",
                                            "spark.task.resource.gpu.amount": "1"}),
    ],
)  # fmt: skip
def test_gpu_conf(gpus: int, script: str, master: str, expected: dict[str, str]) -> None:
    assert gpu_conf(gpus, script, master) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.gpus_per_worker=2", r"train.gpus_per_worker: expected a value in \[0, 1\], found 2"),
        ("train.mixed_precision=true", r"train.mixed_precision: expected one of \[False, 'mixed_float16'\]"),
        ("train.mixed_precision=float16", "did you mean 'mixed_float16'"),
        ("score.gpus_per_task=-1", r"score.gpus_per_task: expected a value in \[0, 1\]"),
    ],
)
def test_gpu_keys_are_checked(cfg: Config, override: str, message: str) -> None:
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError, match=message):
        cfg.replace(**{key: value})


def test_precision_sets_the_policy_for_the_block_and_restores_it() -> None:
    import tensorflow as tf

    before = tf.keras.mixed_precision.global_policy().name
    with devices.precision("mixed_float16") as name:
        assert name == tf.keras.mixed_precision.global_policy().name == "mixed_float16"
    assert tf.keras.mixed_precision.global_policy().name == before
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        with devices.precision("mixed_bfloat16"):
            pass


def test_the_vae_trains_under_mixed_float16_on_cpu_with_a_float32_loss(cfg: Config) -> None:
    import tensorflow as tf

    from sparkvision.models import get_task
    from sparkvision.training.collective import LocalCollective
    from sparkvision.training.worker import compiled_model

    tcfg = cfg.replace(
        **{"train.image_size": "16", "train.latent_dim": "4", "train.mixed_precision": "mixed_float16"}
    ).train
    meta = {"image_size": 16, "latent_dim": 4, "r_loss_factor": tcfg.r_loss_factor}
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    with devices.precision(tcfg.mixed_precision):
        tf.keras.utils.set_random_seed(0)
        model = compiled_model(get_task("vae"), tcfg, meta, LocalCollective())
        # the dynamic loss scale starts at 2**15 and halves on each overflowing step, which is skipped
        losses = [model.train_on_batch(x, return_dict=True)["loss"] for _ in range(16)]
        loss, r_loss, kl_loss = model.compute_losses(tf.constant(x), training=False)
    assert model.encoder.get_layer("encoder_0_conv").compute_dtype == "float16"  # the policy reached the layers
    assert [model.encoder.get_layer(n).compute_dtype for n in ("mu", "log_var", "z")] == ["float32"] * 3
    assert model.decoder.get_layer("decoder_output").compute_dtype == "float32"
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert float(model.optimizer.loss_scale) < 2**15  # scaling engaged
    assert loss.dtype == r_loss.dtype == kl_loss.dtype == tf.float32
    assert np.all(np.isfinite(losses)) and np.isfinite(float(loss))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # it learns


@pytest.mark.parametrize(
    ("master", "env", "expected"),
    [
        ("local[2]", None, {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}),
        ("local-cluster[2,1,1024]", None, {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}),
        ("local[2]", "10.0.0.5", {}),
        ("spark://master:7077", None, {}),
    ],
)
def test_local_masters_bind_the_driver_to_loopback(
    monkeypatch: pytest.MonkeyPatch, master: str, env: str | None, expected: dict[str, str]
) -> None:
    from sparkvision.spark import loopback_conf

    if env is None:
        monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    else:
        monkeypatch.setenv("SPARK_LOCAL_IP", env)
    assert loopback_conf(master) == expected


def test_the_test_session_listens_on_loopback(spark) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1" and conf.get("spark.driver.host") == "127.0.0.1"
