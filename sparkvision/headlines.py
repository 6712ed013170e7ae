"""What each model family is judged by: one headline metric, its baseline and the bar it must clear.

``HEADLINES`` is the one table of bars (issue 27's "every demo model clearly beats its
baseline"): the demo's closing table (``results.where_to_look``) and the first section of a
run's HTML report (``reporting.write_report``) both read it, through ``verdict`` (one run's
metrics in, one ``Verdict`` out) and ``verdict_table`` (the console lines). Nothing here talks
to MLflow: callers pass the metrics of the run behind each family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ATTRIBUTE = "{attribute}"
"""Placeholder in a metric key, expanded over the generator's drawn attributes."""
NOT_LOGGED = "not logged"


@dataclass(frozen=True)
class Headline:
    """The figure a person looks at first for one model family, and the bar it must clear.

    Attributes:
        family: ``sparkvision.models.REGISTRY`` key (the run's ``sparkvision.task`` tag).
        label: What the figure is, as printed.
        keys: Run metric keys the figure is made of. A key holding ``{attribute}`` stands for
            one key per drawn attribute (``sparkvision.data.generators.celeba.DRAWN_ATTRIBUTES``).
        baseline: The same figure for a model that learned nothing: a number, or the metric key
            on the same run that holds it (a comparison logged beside the figure).
        baseline_label: What the baseline is (``mean image``, ``chance``, ``VAE mu``).
        bar: The value to clear.
        direction: ``min``: clears when the figure is at most ``bar``; ``max``: at least ``bar``.
        combine: ``worst``: every key must be logged and the worst of them is judged (the bar holds
            for each); ``mean``: the mean of the keys that are logged.
    """

    family: str
    label: str
    keys: tuple[str, ...]
    baseline: float | str
    baseline_label: str
    bar: float
    direction: Literal["min", "max"]
    combine: Literal["worst", "mean"] = "worst"

    def metric_keys(self) -> tuple[str, ...]:
        """``keys`` with ``{attribute}`` expanded over the drawn attributes."""
        if not any(ATTRIBUTE in k for k in self.keys):
            return self.keys
        from sparkvision.data.generators.celeba import DRAWN_ATTRIBUTES

        return tuple(k.replace(ATTRIBUTE, a) if ATTRIBUTE in k else k for k in self.keys for a in DRAWN_ATTRIBUTES)

    @property
    def bar_text(self) -> str:
        """``<= 0.2`` or ``>= 0.85``."""
        return f"{'<=' if self.direction == 'min' else '>='} {self.bar:g}"


HEADLINES: tuple[Headline, ...] = (
    Headline("vae", "test recon_mse_ratio", ("test_recon_mse_ratio",), 1.0, "mean image", 0.2, "min"),
    Headline("attributes", "test mean AUROC, drawn attributes", ("test_auroc_{attribute}",), 0.5, "chance", 0.85,
             "max", combine="mean"),
    Headline("detector", "test mae_ratio, also on shifted faces", ("test_mae_ratio", "test_shifted_mae_ratio"),
             1.0, "mean box", 0.7, "min"),
    # faces evaluate logs the figures of every model it compares on each of their runs
    # (identification.log_evaluation): faces_rank1 is the run's own, faces_rank1_vae the VAE's mu
    Headline("face_embed", "rank-1 on held-out identities", ("faces_rank1",), "faces_rank1_vae", "VAE mu", 0.9,
             "max"),
    Headline("fabric_ae", "test image AUROC", ("test_image_auroc",), 0.5, "chance", 0.95, "max"),
)  # fmt: skip
"""One headline per model family the demo trains; issue 27 sets the bars."""


def headline(family: str) -> Headline | None:
    """The headline of ``family``, or None when it has none (``classifier``)."""
    return next((h for h in HEADLINES if h.family == family), None)


@dataclass(frozen=True)
class Verdict:
    """A family's headline figure judged against its bar.

    Attributes:
        headline: What was judged.
        value: The figure, or None when the run did not log it.
        baseline: The baseline's figure, or None when the run did not log it.
        passed: Whether ``value`` clears the bar; None when it is not logged.
        note: How the figure was made (``mean of 39 of 39: test_auroc_{attribute}``,
            ``test_mae_ratio 0.550, test_shifted_mae_ratio 0.620``), which keys are missing
            (``no test_image_auroc``) or ``no run``.
    """

    headline: Headline
    value: float | None
    baseline: float | None
    passed: bool | None
    note: str = ""

    @property
    def outcome(self) -> str:
        """``clears the bar``, ``does not clear the bar`` or ``not logged``."""
        if self.passed is None:
            return NOT_LOGGED
        return "clears the bar" if self.passed else "does not clear the bar"

    @property
    def value_text(self) -> str:
        return NOT_LOGGED if self.value is None else f"{self.value:.3f}"

    @property
    def baseline_text(self) -> str:
        figure = NOT_LOGGED if self.baseline is None else f"{self.baseline:.3f}"
        return f"{figure} ({self.headline.baseline_label})"


def _figure(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def verdict(h: Headline, metrics: Mapping[str, float] | None) -> Verdict:
    """Judge one run's metrics against its family's headline.

    Args:
        h: The family's headline.
        metrics: The run's metrics (key → latest value); None when there is no run.

    Returns:
        The verdict; a missing or non-finite figure gives ``passed`` None, never an error.
    """
    if metrics is None:
        return Verdict(h, None, h.baseline if not isinstance(h.baseline, str) else None, None, "no run")
    keys = h.metric_keys()
    found = {k: v for k in keys if (v := _figure(metrics, k)) is not None}
    baseline = _figure(metrics, h.baseline) if isinstance(h.baseline, str) else float(h.baseline)
    if h.combine == "mean":
        if not found:
            return Verdict(h, None, baseline, None, f"no {', '.join(h.keys)}")
        value = sum(found.values()) / len(found)
        note = f"mean of {len(found)} of {len(keys)}: {', '.join(h.keys)}"
    else:
        missing = [k for k in keys if k not in found]
        if missing:
            return Verdict(h, None, baseline, None, f"no {', '.join(missing)}")
        value = (max if h.direction == "min" else min)(found.values())
        note = ", ".join(f"{k} {v:.3f}" for k, v in found.items()) if len(found) > 1 else ""
    passed = value <= h.bar if h.direction == "min" else value >= h.bar
    return Verdict(h, value, baseline, passed, note)


def verdicts(metrics: Mapping[str, Mapping[str, float] | None], families: Sequence[str]) -> list[Verdict]:
    """The verdict of each family that has a headline, in ``families`` order.

    Args:
        metrics: Family → the metrics of the run behind it (None or absent: no run).
        families: The families to judge; those without a headline are left out.

    Returns:
        One verdict per judged family.
    """
    return [verdict(h, metrics.get(f)) for f in families if (h := headline(f)) is not None]


def verdict_table(rows: Sequence[Verdict]) -> list[str]:
    """Console lines of ``rows``: a header, then one line per family."""
    cells = [("model", "headline metric", "value", "baseline", "bar", "verdict")] + [
        (v.headline.family, v.headline.label, v.value_text, v.baseline_text, v.headline.bar_text,
         v.outcome if v.passed is not None else f"{v.outcome} ({v.note})")
        for v in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
