"""The promotion gate: a candidate model version replaces the champion only when it wins.

``promote`` evaluates the version behind ``NAME@candidate`` and the one behind ``NAME@champion``
on the same rows: the pinned test split of the dataset version the candidate was trained on
(its run's ``dataset.path`` tag) unless another dataset is given. Each version is evaluated with
its own meta by its task's ``evaluate`` in inference mode, exactly as the trainer evaluates, on
the driver. One metric decides (``promote.metric``, else the family's ``CRITERIA`` entry), in a
direction, by more than ``promote.min_improvement``; the candidate must also clear an absolute
floor, so the first candidate of a model becomes champion only when it is good enough on its own.

The decision is recorded where people look: tags on both versions (``promotion.*``), a run tag
and a comparison table (``promotion/<stamp>-v<N>.json`` and ``.md``) on the candidate's run, which
the run report shows.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sparkvision import tempdirs
from sparkvision.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from sparkvision.config import PromoteConfig
    from sparkvision.tracking import ModelRef, Tracking

log = logging.getLogger(__name__)

ARTIFACT_DIR = "promotion"
"""Folder of the comparison tables on the candidate's run (the run report reads it)."""
PROMOTED, KEPT, ALREADY = "promoted", "kept", "already_champion"


@dataclass(frozen=True)
class Criterion:
    """How one model family is judged: a test metric (``Task.evaluate`` key), its direction and floor."""

    metric: str
    direction: str
    floor: float


CRITERIA: dict[str, Criterion] = {
    "vae": Criterion("recon_mse_ratio", "min", 1.0),  # must reconstruct better than the mean image
    "attributes": Criterion("mean_auroc", "max", 0.6),
    "classifier": Criterion("mean_auroc", "max", 0.6),
    "detector": Criterion("mae_ratio", "min", 1.0),  # must find the face better than the mean box
    # Holes and stains raise any reconstruction's error: image AUROC does not tell an untrained
    # fabric model from a trained one, where the defect is does (tests/training/test_quality.py).
    "fabric_ae": Criterion("pixel_auroc", "max", 0.85),
}
"""The default criterion of each ``sparkvision.models.REGISTRY`` family."""
_LOWER_IS_BETTER = ("loss", "mse", "mae", "error", "ratio", "rate")


@dataclass
class Decision:
    """What ``promote`` decided, and why (also the comparison table's JSON)."""

    model: str
    outcome: str
    reason: str
    metric: str
    direction: str
    floor: float
    min_improvement: float
    dataset: str
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    candidate_alias: str
    champion_alias: str
    decided_at: str
    artifacts: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


def criterion(task: str, cfg: PromoteConfig) -> Criterion:
    """The family's criterion with ``promote.metric``/``direction``/``floor`` applied over it."""
    base = CRITERIA.get(task, Criterion("loss", "min", math.inf))
    metric = cfg.metric or base.metric
    if cfg.direction != "auto":
        direction = cfg.direction
    elif metric == base.metric:
        direction = base.direction
    else:
        direction = "min" if any(metric.endswith(w) or f"{w}_" in metric for w in _LOWER_IS_BETTER) else "max"
    if cfg.floor is not None:
        floor = float(cfg.floor)
    elif metric == base.metric and direction == base.direction:
        floor = base.floor
    else:
        floor = math.inf if direction == "min" else -math.inf
    return Criterion(metric, direction, floor)


def better(a: float, b: float, direction: str, margin: float = 0.0) -> bool:
    """Whether ``a`` beats ``b`` by more than ``margin`` in ``direction`` (``max`` or ``min``)."""
    return a - b > margin if direction == "max" else b - a > margin


def clears(value: float, floor: float, direction: str) -> bool:
    """Whether ``value`` is at least as good as ``floor``."""
    return value >= floor if direction == "max" else value <= floor


def training_dataset(tracking: Tracking, run_id: str | None) -> str | None:
    """The dataset version a run trained on (its ``dataset.path`` tag: the pinned ``v-<id>`` URL)."""
    if not run_id:
        return None
    return tracking.run(run_id).data.tags.get("dataset.path")


def evaluate_version(tracking: Tracking, ref: ModelRef, data: str, rows: int) -> dict[str, float]:
    """The task's test metrics of one registered version on ``data``'s test split (driver, inference mode).

    Args:
        tracking: The registry.
        ref: The pinned version.
        data: An ingested dataset (its current version) or one version folder.
        rows: At most this many test rows, the first ones in file order.

    Raises:
        UserError: The dataset has no test rows, or does not fit the model's task.
    """
    from sparkvision.models.packaging import load_vision_model
    from sparkvision.training import data as split_data

    info = split_data.inspect_split(data, "test")
    if not info.rows:
        raise UserError(f"--data {data}: expected a test split to evaluate on, found no rows in {info.path}")
    frame = split_data.read_frame(info, None, rows)
    with tempdirs.temporary_directory("sv-promote-") as tmp:
        model, meta, task = load_vision_model(str(tracking.download_model(ref, tmp)))
        meta = copy.deepcopy(meta)  # evaluate may fill in what a meta lacks; the registered one stays as is
        try:
            x, y = task.arrays(frame, meta)
            result = task.evaluate(model, x, y, meta)
        except (KeyError, ValueError) as exc:
            raise UserError(f"{ref.pinned_uri}: cannot be evaluated on {info.path}: {exc}") from exc
    log.info("evaluated %s on %d test rows of %s", ref.pinned_uri, len(frame), data)
    return {k: float(v) for k, v in result.items()}


def promote(
    tracking: Tracking,
    model: str,
    cfg: PromoteConfig,
    candidate_alias: str = "candidate",
    champion_alias: str = "champion",
    data: str = "",
) -> Decision:
    """Compare ``model@candidate_alias`` with ``model@champion_alias``; move the champion alias when the candidate wins.

    Args:
        tracking: The MLflow server with the registry.
        model: Registered model name.
        cfg: Metric, direction, minimum improvement, floor, rows.
        candidate_alias: The alias of the version under review.
        champion_alias: The alias moved when it wins.
        data: Dataset to evaluate on; "" = the dataset version the candidate was trained on.

    Returns:
        The decision (recorded on both versions and the candidate's run before it returns).

    Raises:
        UserError: No candidate, no dataset to evaluate on, tasks that differ, or a metric the
            task does not report.
    """
    candidate = tracking.alias_ref(model, candidate_alias)
    if candidate is None:
        raise UserError(f"--model {model}: expected a version with alias '{candidate_alias}', found none "
                        f"(train it first, or pass --candidate-alias)")  # fmt: skip
    champion = tracking.alias_ref(model, champion_alias)
    task = candidate.task or ""
    crit = criterion(task, cfg)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    base = {"model": model, "metric": crit.metric, "direction": crit.direction, "floor": crit.floor,
            "min_improvement": cfg.min_improvement, "candidate_alias": candidate_alias,
            "champion_alias": champion_alias, "decided_at": now}  # fmt: skip
    if champion is not None and champion.version == candidate.version:
        return Decision(outcome=ALREADY, reason=f"version {candidate.version} is already {model}@{champion_alias}",
                        dataset=data, candidate=_side(candidate, {}), champion=_side(champion, {}), **base)  # fmt: skip
    if champion is not None and champion.task != candidate.task:
        raise UserError(f"--model {model}: the candidate (version {candidate.version}) is a {candidate.task} model, "
                        f"the champion (version {champion.version}) a {champion.task} model; they cannot be compared")  # fmt: skip
    dataset = data or training_dataset(tracking, candidate.run_id)
    if not dataset:
        raise UserError(f"--model {model}: the candidate's run {candidate.run_id} names no training dataset "
                        "(tag dataset.path); pass --data")  # fmt: skip
    ours = evaluate_version(tracking, candidate, dataset, cfg.eval_rows)
    if crit.metric not in ours:
        raise UserError(f"promote.metric '{crit.metric}': {task} reports no such test metric"
                        f"{did_you_mean(crit.metric, sorted(ours), 'metrics')}")  # fmt: skip
    theirs = evaluate_version(tracking, champion, dataset, cfg.eval_rows) if champion is not None else {}
    value = ours[crit.metric]
    word = ">=" if crit.direction == "max" else "<="
    if not clears(value, crit.floor, crit.direction):
        outcome, reason = KEPT, (f"candidate {crit.metric} {value:.4g} does not clear the floor "
                                 f"({word} {crit.floor:.4g})")  # fmt: skip
    elif champion is None:
        outcome, reason = PROMOTED, (f"first candidate: {crit.metric} {value:.4g} clears the floor "
                                     f"({word} {crit.floor:.4g})")  # fmt: skip
    elif crit.metric not in theirs or not math.isfinite(theirs[crit.metric]):
        outcome, reason = PROMOTED, f"the champion reports no {crit.metric}; candidate {value:.4g}"
    else:
        other = theirs[crit.metric]
        wins = better(value, other, crit.direction, cfg.min_improvement)
        need = f" by more than {cfg.min_improvement:g}" if cfg.min_improvement else ""
        outcome = PROMOTED if wins else KEPT
        reason = (f"candidate {crit.metric} {value:.4g} {'beats' if wins else 'does not beat'} the champion's "
                  f"{other:.4g}{need} ({crit.direction} wins)")  # fmt: skip
    decision = Decision(outcome=outcome, reason=reason, dataset=dataset, candidate=_side(candidate, ours),
                        champion=_side(champion, theirs) if champion is not None else None, **base)  # fmt: skip
    if decision.promoted:
        tracking.set_alias(model, champion_alias, str(candidate.version))
    _record(tracking, decision)
    return decision


def _side(ref: ModelRef, metrics: Mapping[str, float]) -> dict[str, Any]:
    return {"version": ref.version, "run_id": ref.run_id, "uri": ref.pinned_uri, "task": ref.task,
            "metrics": dict(sorted(metrics.items()))}  # fmt: skip


def comparison_markdown(d: Decision) -> str:
    """The comparison table: every metric both versions report, the deciding one first."""
    ours, theirs = d.candidate["metrics"], (d.champion or {}).get("metrics", {})
    names = [d.metric, *sorted(k for k in ours if k != d.metric)]
    champ = f"champion v{d.champion['version']}" if d.champion else "champion (none)"
    lines = [f"# Promotion of {d.model}: {d.outcome}", "", d.reason, "",
             f"Evaluated on the test split of `{d.dataset}` at {d.decided_at}; {d.metric}: {d.direction} wins, "
             f"floor {d.floor:g}, minimum improvement {d.min_improvement:g}.", "",
             f"| metric | candidate v{d.candidate['version']} | {champ} |", "|---|---:|---:|"]  # fmt: skip
    for name in names:
        a, b = ours.get(name), theirs.get(name)
        mark = "**" if name == d.metric else ""
        lines.append(f"| {mark}{name}{mark} | {_num(a)} | {_num(b)} |")
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _record(tracking: Tracking, d: Decision) -> None:
    """Tags on both versions and the candidate's run, and the comparison table artifacts."""
    cand, champ = d.candidate, d.champion
    common = {"promotion.metric": d.metric, "promotion.decided_at": d.decided_at, "promotion.dataset": d.dataset,
              "promotion.reason": d.reason[:5000]}  # fmt: skip
    value = cand["metrics"].get(d.metric)
    tracking.set_version_tags(d.model, str(cand["version"]), {
        **common, "promotion.decision": "promoted" if d.promoted else "rejected",
        "promotion.value": "" if value is None else f"{value:.6g}",
        "promotion.compared_with": str(champ["version"]) if champ else "",
    })  # fmt: skip
    if champ is not None:
        other = champ["metrics"].get(d.metric)
        tracking.set_version_tags(d.model, str(champ["version"]), {
            **common, "promotion.decision": "replaced" if d.promoted else "kept",
            "promotion.value": "" if other is None else f"{other:.6g}",
            "promotion.compared_with": str(cand["version"]),
        })  # fmt: skip
    if not cand.get("run_id"):
        return
    stem = f"{ARTIFACT_DIR}/{d.decided_at.replace(':', '').replace('+0000', 'Z')}-v{cand['version']}"
    d.artifacts = [f"{stem}.json", f"{stem}.md"]
    tracking.set_tags(cand["run_id"], {"sparkvision.promotion": "promoted" if d.promoted else "rejected"})
    tracking.log_text(cand["run_id"], json.dumps(asdict(d), indent=2, default=str), d.artifacts[0])
    tracking.log_text(cand["run_id"], comparison_markdown(d), d.artifacts[1])
