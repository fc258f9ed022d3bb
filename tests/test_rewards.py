"""
Tests for rewards.py: integrity checks and the CHRPO reward properties over seeded random
rollouts (answer grading is tested in tests/test_grading.py).

    python -m pytest tests/test_rewards.py -q
"""

import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rewards import (DEFAULTS, calibration_penalty, check_integrity, is_degenerate,  # noqa: E402
                     mode_term, r_ctrl, r_main, rollout_rewards)

BUDGETS = [0.2, 0.4, 0.6, 0.8, 1.0]

# -----------------------------------------------------------------------------
# integrity


def _parsed(budget=0.4, think_closed=True, answer_text=r"So \boxed{5}.", text="fine text"):
    return dict(budget=budget, think_closed=think_closed, think_tokens=10,
                answer_text=answer_text, text=text)


def test_check_integrity_accepts_clean_rollout():
    assert check_integrity(_parsed(), "stop") == (True, [])


@pytest.mark.parametrize("kwargs, finish, reason", [
    (dict(budget=None), "stop", "no_control_token"),
    (dict(think_closed=False), "stop", "think_not_closed"),
    (dict(answer_text="no box"), "stop", "no_boxed_answer"),
    (dict(answer_text=None), "stop", "no_boxed_answer"),
    (dict(answer_text=r"\boxed{1} or \boxed{2}"), "stop", "multiple_boxed_answers"),
    (dict(), "length", "truncated"),
    (dict(text="wait " * 100), "stop", "degenerate"),
])
def test_check_integrity_names_each_failure(kwargs, finish, reason):
    valid, reasons = check_integrity(_parsed(**kwargs), finish)
    assert valid is False and reasons == [reason]


def test_check_integrity_without_control_requirement():
    assert check_integrity(_parsed(budget=None), "stop", require_control=False) == (True, [])


def test_check_integrity_missing_key_is_clear_error():
    with pytest.raises(KeyError, match="answer_text"):
        check_integrity(dict(budget=0.2, think_closed=True, text=""), "stop")


def test_is_degenerate_flags_loops_not_normal_text():
    rng = random.Random(0)
    normal = [rng.randrange(1000) for _ in range(400)]
    assert not is_degenerate(normal)
    assert is_degenerate(normal[:100] + [7, 8, 9] * 30)            # loop at the tail
    assert is_degenerate(torch.tensor(normal[:20] * 20))           # whole text repeats
    assert not is_degenerate(normal[:100] + [0] * 12 + [5, 6])     # a long number, not a loop
    assert not is_degenerate([1] * 20)                             # too short to judge
    assert is_degenerate("the answer is the answer is " * 20)
    assert not is_degenerate("Tom has 3 apples and buys 4 more, so he has 3 + 4 = 7 apples. "
                             "Then he gives 2 away, leaving 7 - 2 = 5 apples in total.")

# -----------------------------------------------------------------------------
# CHRPO reward properties over seeded random rollouts

N_DRAWS = 2000


def _random_rollouts(seed, n=N_DRAWS):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = rng.choice(BUDGETS + [None])
        out.append(dict(
            correct=rng.random() < 0.5,
            valid=rng.random() < 0.7 and c is not None,
            c=c,
            r=rng.uniform(0.0, 2.0),
            g_star=rng.choice(BUDGETS + [None]),
        ))
    return out


@pytest.mark.parametrize("use_mode_term", [True, False])
def test_hierarchy_correct_beats_incorrect_beats_invalid(use_mode_term):
    tiers = {"correct": [], "incorrect": [], "invalid": []}
    for ro in _random_rollouts(1):
        v = r_main(ro["correct"], ro["valid"], ro["c"], ro["r"], ro["g_star"],
                   use_mode_term=use_mode_term)
        tier = "invalid" if not ro["valid"] else ("correct" if ro["correct"] else "incorrect")
        tiers[tier].append(v)
    assert all(len(v) > 100 for v in tiers.values())
    assert min(tiers["correct"]) > max(tiers["incorrect"])
    assert min(tiers["incorrect"]) > max(tiers["invalid"])


@pytest.mark.parametrize("w_center", [0.0, 0.37])
def test_calibration_linear_inside_band_and_huber_outside(w_center):
    rng = random.Random(2)
    delta, band, w = DEFAULTS["huber_delta"], DEFAULTS["band"], DEFAULTS["w_cal"]
    for _ in range(N_DRAWS):
        c, r = rng.choice(BUDGETS), rng.uniform(0.0, 2.0)
        pen = calibration_penalty(c, r, w_center=w_center) - w_center * min(abs(r - c), band)
        excess = abs(r - c) - band
        if excess <= 0:
            assert pen == pytest.approx(0.0, abs=1e-15)
        else:
            # independent reference: torch's smooth-L1 with beta = delta
            ref = w * torch.nn.functional.smooth_l1_loss(
                torch.tensor(excess, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
                beta=delta).item()
            assert pen == pytest.approx(ref, abs=1e-12)
            assert pen > 0
    # quadratic just past the band (doubling the excess quadruples it), linear far away
    edge = calibration_penalty(0.4, 0.4 + band, w_center=w_center)
    p1 = calibration_penalty(0.4, 0.4 + band + delta / 4, w_center=w_center) - edge
    p2 = calibration_penalty(0.4, 0.4 + band + delta / 2, w_center=w_center) - edge
    assert p2 == pytest.approx(4 * p1)
    far = [calibration_penalty(0.2, 0.2 + band + delta + k * 0.1, w_center=w_center) for k in range(4)]
    steps = [b - a for a, b in zip(far, far[1:])]
    assert steps == pytest.approx([w * 0.1] * 3)


def test_without_centering_calibration_moves_r_main_only_outside_band():
    rng = random.Random(3)
    for _ in range(N_DRAWS):
        c, g = rng.choice(BUDGETS), rng.choice(BUDGETS + [None])
        r_in = c + rng.uniform(-0.1, 0.1)
        r_in2 = c + rng.uniform(-0.1, 0.1)
        # incorrect: the mode term does not depend on r, so R_main is flat inside the band
        assert r_main(False, True, c, max(r_in, 0), g, w_center=0) == r_main(False, True, c, max(r_in2, 0), g, w_center=0)
        r_out = c + rng.choice([-1, 1]) * rng.uniform(0.15, 0.6)
        if r_out >= 0:
            assert r_main(False, True, c, r_out, g, w_center=0) < r_main(False, True, c, max(r_in, 0), g, w_center=0)


@pytest.mark.parametrize("w_center", [0.15, 0.5, 1.0])
def test_centering_pays_most_for_thinking_at_the_chosen_budget(w_center):
    # w_center > w_short: inside its band a correct rollout earns most at r = c and less the
    # further r strays either way, so RL has no flat stretch to drift along toward the band's
    # edge (where the control token's kept-budget rule starts failing it)
    band = DEFAULTS["band"]
    assert w_center > DEFAULTS["w_short"]
    for c in BUDGETS:
        for g in (None, 0.4):
            offs = [k * band / 10 for k in range(11)]
            above = [r_main(True, True, c, c + d, g, w_center=w_center) for d in offs]
            below = [r_main(True, True, c, c - d, g, w_center=w_center) for d in offs]
            assert all(a > b for a, b in zip(above, above[1:])), (c, above)
            assert all(a > b for a, b in zip(below, below[1:])), (c, below)


def test_shortness_smaller_ratio_earns_more_capped_at_kappa():
    rng = random.Random(4)
    kappa = DEFAULTS["kappa"]
    for _ in range(N_DRAWS):
        c, g = rng.choice(BUDGETS), rng.choice(BUDGETS + [None])
        r1, r2 = sorted(max(0.0, c + rng.uniform(-0.1, 0.1)) for _ in range(2))
        m1, m2 = mode_term(True, c, r1, g), mode_term(True, c, r2, g)
        assert m1 >= m2 and m1 <= kappa
        if DEFAULTS["w_short"] * (1 - r1) < kappa and r1 < r2:  # below the cap: strictly more
            assert m1 > m2
        # with calibration neutral (both inside the band, no centering) R_main follows the same order
        v1, v2 = r_main(True, True, c, r1, g, w_center=0), r_main(True, True, c, r2, g, w_center=0)
        assert v1 >= v2 and v1 <= 1.0 + kappa
    # the bonus saturates: any two very short ratios earn exactly kappa
    assert mode_term(True, 0.2, 0.05, None) == mode_term(True, 0.2, 0.15, None) == kappa


def test_safe_shortening_under_budget_failure_costs_more():
    rng = random.Random(5)
    under_main, over_main, under_ctrl, over_ctrl = [], [], [], []
    for _ in range(N_DRAWS):
        g = rng.choice(BUDGETS[1:])
        c_under = rng.choice([b for b in BUDGETS if b < g])
        c_over = rng.choice([b for b in BUDGETS if b >= g])
        # same calibration (r on the chosen budget) so only the mode term differs
        under_main.append(r_main(False, True, c_under, c_under, g))
        over_main.append(r_main(False, True, c_over, c_over, g))
        under_ctrl.append(r_ctrl(c_under, g, False))
        over_ctrl.append(r_ctrl(c_over, g, False))
    assert max(under_main) < min(over_main)
    assert max(under_ctrl) < min(over_ctrl)
    # and deeper under-budgeting costs more in R_ctrl
    assert r_ctrl(0.2, 0.8, False) < r_ctrl(0.6, 0.8, False)


def test_rapid_recovery_all_fail_prefers_larger_budgets():
    rng = random.Random(6)
    for _ in range(N_DRAWS):
        c1, c2 = sorted(rng.sample(BUDGETS, 2))
        correct = rng.random() < 0.5
        assert r_ctrl(c1, None, correct) < r_ctrl(c2, None, correct)


def test_r_ctrl_shape_with_teacher_budget():
    rng = random.Random(7)
    kappa = DEFAULTS["kappa"]
    values = []
    for _ in range(N_DRAWS):
        g = rng.choice(BUDGETS)
        at_or_above = [b for b in BUDGETS if b >= g]
        # c == g* is best among correct rollouts with c >= g*
        best = r_ctrl(g, g, True)
        assert all(r_ctrl(c, g, True) < best for c in at_or_above if c != g)
        # beating the teacher earns extra, capped at kappa
        for c in (b for b in BUDGETS if b < g):
            assert best < r_ctrl(c, g, True) <= best + kappa
        c, correct = rng.choice(BUDGETS), rng.random() < 0.5
        values.append(r_ctrl(c, rng.choice(BUDGETS + [None]), correct))
    # no control token is the minimum possible value
    assert r_ctrl(None, 0.4, True) < min(values)
    assert r_ctrl(None, None, False) < min(values)


def test_rollout_rewards_and_overrides():
    # hand values (constants explicit; more in test_reward_values.py): correct, c = r = g* = 0.4:
    # R_main = 1 + min(kappa, w_short * 0.6) = 1.18, R_ctrl = 1 - (c - g*) = 1
    assert rollout_rewards(True, True, 0.4, 0.4, 0.4, kappa=0.3, w_short=0.3) == pytest.approx((1.18, 1.0))
    assert r_main(False, False, None, None, None, invalid_reward=-1.7) == -1.7
    assert r_main(True, True, 0.2, 0.1, None, kappa=0.05, w_center=0) == pytest.approx(1.05)
    assert r_main(True, True, 0.2, 0.1, None, kappa=0.05, w_center=0.3) == pytest.approx(1.05 - 0.03)
    assert mode_term(False, 0.2, 0.2, 0.8, use_mode_term=False) == 0.0
    with pytest.raises(KeyError, match="kapa"):
        r_main(True, True, 0.2, 0.2, None, kapa=0.1)
    with pytest.raises(ValueError, match="tier_clip"):
        r_main(True, True, 0.2, 0.2, None, tier_clip=0.6)
    with pytest.raises(ValueError, match="c=1.5"):
        r_ctrl(1.5, 0.4, True)
    with pytest.raises(ValueError, match="realized ratio"):
        r_main(True, True, 0.4, None, 0.4)
    with pytest.raises(ValueError, match="w_center"):
        r_main(True, True, 0.4, 0.45, 0.4, w_center=-0.1)
    with pytest.raises(ValueError, match="w_over"):  # 1 - 1.6 * 0.8 < -lambda_over: correct would lose to wrong
        r_ctrl(1.0, 0.2, True, w_over=1.6)
    assert r_ctrl(1.0, 0.2, True, w_over=1.4) > r_ctrl(1.0, 0.2, False, w_over=1.4)
