"""The promotion gate on real registered versions: two fabric_ae versions trained through ``train``
(``fabric_models``), judged by ``sparkvision promote`` on the pinned test split they were trained on.

Measured on this data (test split, 12 images): trained pixel AUROC 0.88, untrained 0.78; the
fabric floor is 0.85, so the untrained one alone never becomes champion."""

from __future__ import annotations

import json
import math

import pytest

from sparkvision.cli import main
from sparkvision.config import PromoteConfig
from sparkvision.promotion import criterion


def _promote(capsys: pytest.CaptureFixture[str], name: str, *sets: str) -> tuple[int, str]:
    code = main(["promote", "--model", name, "--env", "test", *[x for s in sets for x in ("--set", s)]])
    out = capsys.readouterr()
    return code, (out.out + out.err).strip()


def test_a_worse_candidate_keeps_the_champion_and_a_better_one_replaces_it(
    fabric_models: dict, tracking, capsys: pytest.CaptureFixture[str]
) -> None:
    name = fabric_models["name"]
    good, bad = fabric_models["trained"]["version"], fabric_models["untrained"]["version"]

    tracking.set_alias(name, "candidate", bad)
    code, out = _promote(capsys, name)
    assert code == 3 and "does not clear the floor" in out and "unset" in out, out
    assert tracking.alias_ref(name, "champion") is None

    code, out = _promote(capsys, name, "promote.floor=0.5")  # a lower floor: the first candidate clears it
    assert code == 0 and out.startswith(f"promoted {name} version {bad} to @champion: first candidate"), out
    assert tracking.alias_ref(name, "champion").version == bad

    tracking.set_alias(name, "candidate", good)
    code, out = _promote(capsys, name)
    assert code == 0 and f"promoted {name} version {good}" in out and "beats the champion's" in out, out
    assert tracking.alias_ref(name, "champion").version == good
    tags = tracking.version_tags(name, good)
    assert tags["promotion.decision"] == "promoted" and tags["promotion.compared_with"] == bad, tags
    assert tags["promotion.metric"] == "pixel_auroc"
    assert tracking.version_tags(name, bad)["promotion.decision"] == "replaced"
    assert float(tags["promotion.value"]) > float(tracking.version_tags(name, bad)["promotion.value"])
    # Both were evaluated on the candidate's pinned dataset version (its run's dataset.path tag).
    run_id = fabric_models["trained"]["run_id"]
    assert tags["promotion.dataset"] == tracking.run(run_id).data.tags["dataset.path"]
    files = tracking.list_artifacts(run_id, "promotion")
    assert len(files) == 2 and {f.rsplit(".", 1)[1] for f in files} == {"json", "md"}, files
    decision = json.loads((tracking.download(run_id, next(f for f in files if f.endswith(".json")),
                                             fabric_models["data"].parent / "dl")).read_text())  # fmt: skip
    assert decision["outcome"] == "promoted" and decision["champion"]["version"] == bad
    assert decision["candidate"]["metrics"]["pixel_auroc"] > decision["champion"]["metrics"]["pixel_auroc"]
    assert tracking.run(run_id).data.tags["sparkvision.promotion"] == "promoted"

    tracking.set_alias(name, "candidate", bad)
    code, out = _promote(capsys, name, "promote.floor=0.5")
    assert code == 3 and out.startswith(f"kept {name}@champion = version {good} (candidate version {bad})"), out
    assert "does not beat the champion's" in out
    assert tracking.alias_ref(name, "champion").version == good
    assert tracking.version_tags(name, bad)["promotion.decision"] == "rejected"
    assert tracking.version_tags(name, good)["promotion.decision"] == "kept"

    # The champion itself as the candidate: nothing to decide.
    code, out = _promote(capsys, name, "promote.floor=0.5", "promote.min_improvement=0.01")
    assert code == 3  # still the untrained candidate
    tracking.set_alias(name, "candidate", good)
    code, out = _promote(capsys, name)
    assert code == 0 and "already" in out, out


def test_promote_names_what_is_missing(tracking, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _promote(capsys, "no-such-model-xyz")
    assert code == 2 and out == ("sparkvision: error: --model no-such-model-xyz: expected a version with alias "
                                 "'candidate', found none (train it first, or pass --candidate-alias)"), out  # fmt: skip


@pytest.mark.parametrize(
    ("task", "settings", "expected"),
    [
        ("fabric_ae", {}, ("pixel_auroc", "max", 0.85)),
        ("vae", {}, ("recon_mse_ratio", "min", 1.0)),
        ("attributes", {"metric": "mean_balanced_accuracy"}, ("mean_balanced_accuracy", "max", -math.inf)),
        ("detector", {"metric": "shifted_pixel_mae"}, ("shifted_pixel_mae", "min", math.inf)),
        ("detector", {"metric": "mean_iou", "floor": 0.3}, ("mean_iou", "max", 0.3)),
        ("vae", {"direction": "max"}, ("recon_mse_ratio", "max", -math.inf)),
    ],
)
def test_each_family_has_a_criterion_configuration_can_change(task: str, settings: dict, expected: tuple) -> None:
    c = criterion(task, PromoteConfig(**settings))
    assert (c.metric, c.direction, c.floor) == expected
