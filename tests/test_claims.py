"""The claims block: paired intervals and verdicts, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from bolt.report import claims


def test_paired_interval_matches_the_t_interval_computed_by_hand():
    result = claims.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2 df) = 4.302653
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert result["differences"] == pytest.approx([0.1, 0.2, 0.3])
    assert result["mean"] == pytest.approx(0.2)
    assert result["ci95"] == pytest.approx([0.2 - half, 0.2 + half])


def test_a_gain_inside_the_spread_fails_and_a_clear_one_passes():
    models = {
        "a": {"accuracy": [0.5, 0.6, 0.7]},
        "b": {"accuracy": [0.4, 0.4, 0.4]},  # mean gain 0.2, interval [-0.048, 0.448]
        "c": {"accuracy": [0.70, 0.72, 0.74, 0.71, 0.73]},
        "d": {"accuracy": [0.40, 0.40, 0.40, 0.40, 0.40]},  # gain 0.32, interval [0.300, 0.340]
    }
    assert claims.compare(models, claims.Comparison("a", "b"))["verdict"] == claims.FAIL
    passed = claims.compare(models, claims.Comparison("c", "d", margin=0.20))
    assert passed["verdict"] == claims.PASS
    assert passed["ci95"][0] == pytest.approx(0.32 - 2.7764451051977987 * 0.015811388300841896 / math.sqrt(5))
    # the same gain fails a margin that its interval does not clear
    assert claims.compare(models, claims.Comparison("c", "d", margin=0.31))["verdict"] == claims.FAIL


def test_one_seed_or_a_missing_model_is_not_tested_never_passed():
    models = {"a": {"accuracy": [0.9]}, "b": {"accuracy": [0.1]}}
    assert claims.compare(models, claims.Comparison("a", "b"))["verdict"] == claims.NOT_TESTED
    assert claims.compare(models, claims.Comparison("a", "absent"))["verdict"] == claims.NOT_TESTED
    with pytest.raises(ValueError, match="one per seed"):
        claims.paired_difference([0.1, 0.2], [0.1])


def _demo_models() -> dict:
    """Three seeds of a demo where claims 1 and 3 hold and iteration 2 falls on one seed."""
    return {
        "raw_warm": {"accuracy": [0.20, 0.15, 0.18]},
        "warm_start": {"accuracy": [0.70, 0.62, 0.66]},
        "wrap_cot": {"accuracy": [0.75, 0.70, 0.72]},
        "em_1": {"accuracy": [0.80, 0.74, 0.77], "latent_correct_share": [0.90, 0.70, 0.65]},
        "em_2": {"accuracy": [0.85, 0.70, 0.80], "latent_correct_share": [0.93, 0.75, 0.68]},
        "raw_flops_matched": {"accuracy": [0.2, 0.2, 0.2]},
        "em_1_k1": {"accuracy": [0.50, 0.45, 0.48]},
        "em_1_k4": {"accuracy": [0.65, 0.60, 0.62]},
    }


def test_demo_claims_verdicts_follow_the_required_comparisons():
    result = claims.demo_claims(_demo_models(), chain_samples=16, sweep=[1, 4])
    assert result["1"]["verdict"] == claims.PASS
    assert result["1"]["ratio"]["ratio"] == pytest.approx(0.66 / (0.53 / 3))
    # wrap_cot beats the warm start: shown as a failed comparison, the claim still passes
    wrap = next(c for c in result["1"]["comparisons"] if c["lower"] == "wrap_cot")
    assert wrap["verdict"] == claims.FAIL and not wrap["required"]
    assert result["2"]["verdict"] == claims.FAIL  # em_2 - em_1: +0.05, -0.04, +0.03
    pairs = [(c["higher"], c["lower"], c["metric"]) for c in result["2"]["comparisons"]]
    assert pairs == [
        ("em_1", "warm_start", "accuracy"),
        ("em_2", "em_1", "accuracy"),
        ("em_2", "raw_flops_matched", "accuracy"),
        ("em_2", "em_1", "latent_correct_share"),
    ]
    assert [(c["higher"], c["lower"]) for c in result["3"]["comparisons"]] == [
        ("em_1_k4", "em_1_k1"),
        ("em_1", "em_1_k4"),
    ]
    assert result["3"]["verdict"] == claims.PASS
    text = claims.markdown(result)
    assert "### Claim 2: FAIL" in text and "em_2 > em_1 | accuracy | +0.050, -0.040, +0.030" in text


def test_a_claim_with_a_missing_required_model_is_not_passed():
    models = _demo_models()
    del models["raw_warm"]
    assert claims.demo_claims(models, chain_samples=16, sweep=[1, 4])["1"]["verdict"] == claims.NOT_TESTED
