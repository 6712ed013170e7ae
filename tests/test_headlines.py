"""The headline bars (``sparkvision.headlines``): a run's metrics in, verdicts and the demo's closing table out."""

from __future__ import annotations

import re

import pytest

from sparkvision.data.generators.celeba import DRAWN_ATTRIBUTES
from sparkvision.headlines import HEADLINES, headline, verdict, verdict_table, verdicts

DEMO_FAMILIES = ["vae", "attributes", "detector", "face_embed", "fabric_ae"]


def test_every_demo_family_has_one_headline() -> None:
    assert [h.family for h in HEADLINES] == DEMO_FAMILIES
    assert headline("classifier") is None


@pytest.mark.parametrize(
    ("family", "metrics", "value", "passed"),
    [
        ("vae", {"test_recon_mse_ratio": 0.18}, 0.18, True),
        ("vae", {"test_recon_mse_ratio": 0.388}, 0.388, False),
        ("detector", {"test_mae_ratio": 0.5, "test_shifted_mae_ratio": 0.65}, 0.65, True),
        # the bar holds on aligned faces, not on shifted ones: the worst is judged
        ("detector", {"test_mae_ratio": 0.5, "test_shifted_mae_ratio": 1.231}, 1.231, False),
        ("fabric_ae", {"test_image_auroc": 1.0}, 1.0, True),
        ("face_embed", {"faces_rank1": 0.567, "faces_rank1_vae": 0.31}, 0.567, False),
    ],
)
def test_verdict_passes_and_fails_at_the_bar(family: str, metrics: dict[str, float], value: float,
                                             passed: bool) -> None:  # fmt: skip
    (v,) = verdicts({family: metrics}, [family])
    assert v.value == pytest.approx(value) and v.passed is passed
    assert v.outcome == ("clears the bar" if passed else "does not clear the bar")


def test_attribute_mean_is_over_the_drawn_attributes_only() -> None:
    metrics = {f"test_auroc_{a}": 0.9 for a in DRAWN_ATTRIBUTES}
    metrics |= {"test_auroc_Attractive": 0.5, "test_mean_auroc": 0.89}  # drawn at random: left out
    v = verdict(headline("attributes"), metrics)
    assert v.value == pytest.approx(0.9) and v.passed is True and v.baseline == 0.5
    assert v.note == f"mean of {len(DRAWN_ATTRIBUTES)} of {len(DRAWN_ATTRIBUTES)}: test_auroc_{{attribute}}"
    below = {f"test_auroc_{a}": 0.84 for a in DRAWN_ATTRIBUTES} | {"test_auroc_Attractive": 1.0, "test_mean_auroc": 0.9}
    assert verdict(headline("attributes"), below).passed is False


def test_the_baseline_comes_from_the_run_when_it_is_a_metric_key() -> None:
    v = verdict(headline("face_embed"), {"faces_rank1": 0.95, "faces_rank1_vae": 0.41})
    assert v.passed is True and v.baseline == pytest.approx(0.41) and v.baseline_text == "0.410 (VAE mu)"
    assert verdict(headline("face_embed"), {"faces_rank1": 0.95}).baseline_text == "not logged (VAE mu)"


@pytest.mark.parametrize(
    ("metrics", "note"),
    [
        (None, "no run"),
        ({}, "no test_mae_ratio, test_shifted_mae_ratio"),
        ({"test_mae_ratio": 0.5}, "no test_shifted_mae_ratio"),  # never judged on half the bar
        ({"test_mae_ratio": 0.5, "test_shifted_mae_ratio": float("nan")}, "no test_shifted_mae_ratio"),
    ],
)
def test_a_missing_figure_is_not_logged_never_an_error(metrics: dict[str, float] | None, note: str) -> None:
    v = verdict(headline("detector"), metrics)
    assert (v.value, v.passed, v.outcome, v.note) == (None, None, "not logged", note)


def test_the_table_has_one_line_per_family_in_the_order_asked() -> None:
    rows = verdicts({"vae": {"test_recon_mse_ratio": 0.18}, "detector": {"test_mae_ratio": 0.9,
                     "test_shifted_mae_ratio": 0.95}}, ["vae", "classifier", "detector", "face_embed"])  # fmt: skip
    lines = verdict_table(rows)
    assert len(lines) == 4
    assert lines[0].split() == ["model", "headline", "metric", "value", "baseline", "bar", "verdict"]
    assert lines[1].split()[0] == "vae" and "0.180" in lines[1] and "1.000 (mean image)" in lines[1]
    assert re.search(r"<= 0.2 +clears the bar$", lines[1])
    assert lines[2].startswith("detector") and re.search(r"<= 0.7 +does not clear the bar$", lines[2])
    assert lines[3].startswith("face_embed") and re.search(r">= 0.9 +not logged \(no run\)$", lines[3])
    assert lines[0].index("bar") == lines[1].index("<= 0.2") == lines[2].index("<= 0.7") == lines[3].index(">= 0.9")
