"""The evaluate stage's verdicts: a change beyond noise is better or worse, one within it the same; the headline
is the out-of-domain set; a regression beyond the margin fails the stage."""
import math
import random

import pytest

from stages import evaluate


def losses(per_row: list[float], tokens: int = 50) -> list[tuple[float, int]]:
    """(summed loss, tokens) rows with the given mean loss per token."""
    return [(loss * tokens, tokens) for loss in per_row]


def test_a_paired_change_beyond_noise_is_better_or_worse_and_within_it_the_same():
    rng = random.Random(0)
    base = [2.0 + rng.gauss(0, 0.5) for _ in range(200)]  # rows differ a lot from each other
    better = [loss - 0.05 + rng.gauss(0, 0.02) for loss in base]  # but every row gains a little
    noise = [loss + rng.gauss(0, 0.2) for loss in base]
    sizes = [200] * len(base)
    assert evaluate.compare(losses(base), losses(better), sizes)["verdict"] == "better"
    assert evaluate.compare(losses(base), losses([x + 0.05 for x in base]), sizes)["verdict"] == "worse"
    assert evaluate.compare(losses(base), losses(noise), sizes)["verdict"] == "same"
    change, stderr = evaluate.paired_loss_change(losses(base), losses(better))
    assert change == pytest.approx(-0.05, abs=0.005) and 0 < stderr < 0.005


def test_the_paired_standard_error_matches_its_definition_on_rows_of_unequal_length():
    base = [(10.0, 5), (30.0, 10), (8.0, 4), (50.0, 20)]
    tuned = [(9.0, 5), (27.0, 10), (8.5, 4), (44.0, 20)]
    change, stderr = evaluate.paired_loss_change(base, tuned)
    tokens = 39
    assert change == pytest.approx((-1 - 3 + 0.5 - 6) / tokens)
    residuals = [d - change * n for d, n in zip([-1, -3, 0.5, -6], [5, 10, 4, 20])]
    assert stderr == pytest.approx(math.sqrt(sum(r * r for r in residuals) * 4 / 3) / tokens)


def test_a_task_verdict_uses_the_harness_standard_errors_and_its_direction():
    run = {"results": {"xcopa_tr": {"alias": "xcopa_tr", "acc,none": 0.60, "acc_stderr,none": 0.02}},
           "higher_is_better": {"xcopa_tr": {"acc": True}}}
    scores, stderrs, higher = evaluate.task_scores(run)
    assert scores == {"xcopa_tr/acc": 0.6} and stderrs == {"xcopa_tr/acc": 0.02} and higher["xcopa_tr/acc"]
    assert evaluate.verdict(0.07, math.sqrt(2) * 0.02, lower_is_better=False) == "better"
    assert evaluate.verdict(-0.02, math.sqrt(2) * 0.02, lower_is_better=False) == "same"
    assert evaluate.verdict(-0.07, math.sqrt(2) * 0.02, lower_is_better=False) == "worse"
    assert evaluate.verdict(0.07, None, lower_is_better=True) == "worse"  # no stderr: the sign decides


def report(general: str, english: str, task: str = "same", task_delta: float = 0.0) -> dict:
    def held_out(verdict, base, tuned):
        return {"all": {"base": {"perplexity": base, "bits_per_byte": 1.0},
                        "tuned": {"perplexity": tuned, "bits_per_byte": 0.9}, "verdict": verdict}}

    return {"turkish_general": held_out(general, 100.0, 90.0 if general == "better" else 120.0),
            "validation": held_out("better", 20.0, 10.0), "english": held_out(english, 30.0, 36.0),
            "lm_eval": {"xcopa_tr": {"xcopa_tr/acc": {"base": 0.6, "tuned": 0.6 + task_delta, "delta": task_delta,
                                                      "stderr": 0.01, "verdict": task}}},
            "lm_eval_skipped": {"turkishmmlu": "gated"}, "generation": {}}


def test_the_headline_leads_with_general_turkish_and_carries_every_verdict():
    headline = evaluate.headline(report("better", "worse", "worse", -0.1))
    assert list(headline)[0] == "general"
    assert headline["general"] == {"ppl": 90.0, "verdict": "better"}
    assert headline["english"]["verdict"] == "worse"
    assert headline["tasks"] == {"xcopa_tr": "worse", "turkishmmlu": "skipped"}


def test_regressions_beyond_the_margin_are_named_and_small_ones_are_not():
    assert evaluate.regressions(report("better", "same"), 0.02) == []
    found = evaluate.regressions(report("worse", "worse", "worse", -0.1), 0.05)
    assert found == ["turkish_general perplexity 100 -> 120", "english perplexity 30 -> 36",
                     "xcopa_tr/acc 0.6 -> 0.5"]
    assert evaluate.regressions(report("better", "worse", "worse", -0.1), 0.5) == []  # within a 50 % margin
