"""The paper's three claims as computed verdicts: paired differences over seeds with 95% intervals.

A claim is a list of comparisons ``higher > lower`` on one metric (held-out accuracy unless
said otherwise). Each seed trains both models, so a comparison works on the per-seed paired
differences ``higher - lower``: their mean and a 95% confidence interval from Student's t with
``n - 1`` degrees of freedom. A comparison passes when the whole interval lies above its
``margin``; with fewer than two seeds there is no interval and the comparison is not tested.
A claim passes when every required comparison passes; comparisons that are not required
(``warm_start`` against ``wrap_cot``, say) are shown with their own verdict and never decide
the claim.

Input is the ``models`` mapping of a demo's ``results.json``: model name -> metric -> one value
per seed, in seed order (the same order for every model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

PASS, FAIL, NOT_TESTED = "pass", "fail", "not tested"

Models = dict[str, dict[str, list]]


@dataclass(frozen=True)
class Comparison:
    higher: str
    """The model expected to score higher."""
    lower: str
    metric: str = "accuracy"
    margin: float = 0.0
    """The paired gain's 95% interval must lie above this."""
    required: bool = True
    """False: shown with its verdict, but the claim does not depend on it."""


def paired_difference(higher: list[float], lower: list[float], confidence: float = 0.95) -> dict:
    """Per-seed differences ``higher - lower``, their mean and the ``confidence`` interval of the mean."""
    if len(higher) != len(lower):
        raise ValueError(f"paired values need one per seed on both sides, got {len(higher)} and {len(lower)}")
    differences = np.asarray(higher, dtype=np.float64) - np.asarray(lower, dtype=np.float64)
    n = len(differences)
    result = {
        "differences": [float(d) for d in differences],
        "n": n,
        "mean": float(differences.mean()) if n else math.nan,
        "ci95": None,
    }
    if n >= 2:
        from scipy import stats

        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n))
        result["ci95"] = [result["mean"] - half, result["mean"] + half]
    return result


def compare(models: Models, comparison: Comparison) -> dict:
    """One comparison's paired statistics and verdict (``not tested`` when a model or the metric is missing)."""
    entry = {
        "higher": comparison.higher,
        "lower": comparison.lower,
        "metric": comparison.metric,
        "margin": comparison.margin,
        "required": comparison.required,
    }
    values = [models.get(name, {}).get(comparison.metric) for name in (comparison.higher, comparison.lower)]
    if any(v is None or any(x is None for x in v) for v in values):
        return {**entry, "verdict": NOT_TESTED, "why": "a model or its metric is missing from this run"}
    statistics = paired_difference(values[0], values[1])
    if statistics["ci95"] is None:
        return {**entry, **statistics, "verdict": NOT_TESTED, "why": "an interval needs at least 2 seeds"}
    return {**entry, **statistics, "verdict": PASS if statistics["ci95"][0] > comparison.margin else FAIL}


def _ratio_of_means(models: Models, higher: str, lower: str, at_least: float) -> dict:
    """``mean(higher) / mean(lower)`` on accuracy, against a required factor."""
    entry = {"higher": higher, "lower": lower, "metric": "accuracy", "at_least": at_least}
    if higher not in models or lower not in models:
        return {**entry, "verdict": NOT_TESTED, "why": "a model is missing from this run"}
    low = float(np.mean(models[lower]["accuracy"]))
    ratio = float(np.mean(models[higher]["accuracy"])) / low if low > 0 else math.inf
    return {**entry, "ratio": ratio, "verdict": PASS if ratio >= at_least else FAIL}


def _verdict(parts: list[dict]) -> str:
    required = [p for p in parts if p.get("required", True)]
    if not required or any(p["verdict"] == FAIL for p in required):
        return FAIL if required else NOT_TESTED
    return PASS if all(p["verdict"] == PASS for p in required) else NOT_TESTED


def em_chain(models: Models) -> list[str]:
    """``warm_start, em_1, em_2, ...`` as far as the run has them."""
    chain = ["warm_start"]
    while f"em_{len(chain)}" in models:
        chain.append(f"em_{len(chain)}")
    return chain


def k_sweep_models(models: Models, chain_samples: int, sweep: list[int]) -> list[tuple[int, str]]:
    """(K, model) of iteration 1's inference-compute sweep; the chain's own K is ``em_1``."""
    pairs = [(k, "em_1" if k == chain_samples else f"em_1_k{k}") for k in sorted(set(sweep) | {chain_samples})]
    return [(k, name) for k, name in pairs if name in models]


def demo_claims(models: Models, chain_samples: int, sweep: list[int]) -> dict:
    """The ``claims`` block of a demo's ``results.json``."""
    chain = em_chain(models)
    last = chain[-1]
    claim_1 = [
        compare(models, Comparison("warm_start", "raw_warm", margin=0.20)),
        compare(models, Comparison("warm_start", "wrap_cot", required=False)),
    ]
    claim_2 = [compare(models, Comparison(after, before)) for before, after in pairwise(chain)]
    claim_2 += [
        compare(models, Comparison(last, baseline))
        for baseline in ("warm_long", "raw_token_matched", "raw_flops_matched")
        if baseline in models
    ]
    claim_2 += [
        compare(models, Comparison(after, before, metric="latent_correct_share"))
        for before, after in pairwise(chain[1:])
    ]
    sweep_models = k_sweep_models(models, chain_samples, sweep)
    claim_3 = [compare(models, Comparison(high, low)) for (_, low), (_, high) in pairwise(sweep_models)]
    ratio = _ratio_of_means(models, "warm_start", "raw_warm", at_least=2.0)
    return {
        "1": {
            "statement": "latent thoughts make the same raw data go further: warm_start at least 2x raw_warm, "
            "with a paired gain above 0.20 (wrap_cot shown, not required)",
            "ratio": ratio,
            "comparisons": claim_1,
            "verdict": _verdict(claim_1 + [ratio]),
        },
        "2": {
            "statement": f"bootstrapping: accuracy rises at every EM iteration ({' < '.join(chain)}), "
            "the last beats the controls, and the share of correct chosen latents rises",
            "comparisons": claim_2,
            "verdict": _verdict(claim_2) if len(chain) > 1 else NOT_TESTED,
        },
        "3": {
            "statement": "more Monte Carlo samples in the E-step make a better next model: "
            + " < ".join(f"K={k}" for k, _ in sweep_models),
            "comparisons": claim_3,
            "verdict": _verdict(claim_3) if len(sweep_models) > 1 else NOT_TESTED,
        },
    }


def _interval(entry: dict) -> str:
    if entry.get("ci95") is None:
        return ""
    low, high = entry["ci95"]
    return f"[{low:+.3f}, {high:+.3f}]"


def markdown(claims: dict) -> str:
    """One table per claim: each comparison's per-seed differences, mean, 95% interval and verdict."""
    lines = []
    for number, claim in claims.items():
        lines += [f"### Claim {number}: {claim['verdict'].upper()}", "", claim["statement"] + ".", ""]
        if "ratio" in claim and "ratio" in claim["ratio"]:
            r = claim["ratio"]
            lines += [
                f"mean {r['higher']} / mean {r['lower']} = {r['ratio']:.2f} (needs {r['at_least']:g}): {r['verdict']}",
                "",
            ]
        lines += [
            "| comparison | metric | per-seed differences | mean | 95% CI | needs above | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in claim["comparisons"]:
            differences = ", ".join(f"{d:+.3f}" for d in c.get("differences", []))
            mean = f"{c['mean']:+.3f}" if "mean" in c else ""
            verdict = (
                c["verdict"] + ("" if c["required"] else " (not required)") + (f": {c['why']}" if "why" in c else "")
            )
            lines.append(
                f"| {c['higher']} > {c['lower']} | {c['metric']} | {differences} | {mean} | {_interval(c)} "
                f"| {c['margin']:g} | {verdict} |"
            )
        lines.append("")
    return "\n".join(lines)
