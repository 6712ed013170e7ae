"""The one "did you mean" helper behind every unknown-name message."""

from __future__ import annotations

import pytest

from sparkvision.errors import did_you_mean


@pytest.mark.parametrize(
    ("name", "choices", "what", "expected"),
    [
        ("epoch", ["epochs", "batch_size"], "keys", "; did you mean 'epochs'?"),
        ("vea", ["attributes", "vae"], "", "; did you mean 'vae'?"),
        (3, [1, 2, 3.5], "", ""),
        ("zzz", ["epochs", "batch_size"], "keys", "; valid keys: epochs, batch_size"),
        ("zzz", ["epochs", "batch_size"], "", ""),
        ("zzz", [], "keys", ""),
    ],
)
def test_did_you_mean(name: object, choices: list[object], what: str, expected: str) -> None:
    assert did_you_mean(name, choices, what) == expected
