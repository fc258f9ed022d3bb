"""
Tests for rewards.py: answer extraction, equivalence (fast and symbolic paths, adversarial
inputs), integrity checks, and the CHRPO reward properties over seeded random rollouts.

    python -m pytest tests/test_rewards.py -q
"""

import os
import random
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rewards  # noqa: E402
from rewards import (DEFAULTS, calibration_penalty, check_integrity, extract_answer,  # noqa: E402
                     find_boxed, is_degenerate, is_equiv, mode_term, r_ctrl, r_main,
                     rollout_rewards)

BUDGETS = [0.2, 0.4, 0.6, 0.8, 1.0]

# -----------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize("text, expected", [
    (r"so the result is \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"nested \boxed{\{1, \boxed{2}\}} end", r"\{1, \boxed{2}\}"),
    (r"first \boxed{3} then corrected \boxed{4}", "4"),
    (r"\fbox{7}", "7"),
    (r"last \boxed{3} then a truncated \boxed{4", "3"),
    (r"we get \boxed 5.", "5"),
    ("The answer is: 17.", "17"),
    ("blah. The answer is $\\frac{3}{4}$.\n", r"\frac{3}{4}"),
    ("The final answer is 12", "12"),
    ("work\n#### 1,234", "1,234"),
    (r"#### 5 and The answer is 6 but \boxed{7}", "7"),  # a box wins over text forms
    ("no answer here", None),
    ("", None),
    (None, None),
    (r"\boxed{", None),
])
def test_extract_answer_takes_last_balanced_box_or_text_form(text, expected):
    assert extract_answer(text) == expected


def test_find_boxed_counts_top_level_boxes_only():
    assert find_boxed(r"\boxed{1} and \boxed{\boxed{2}+1}") == ["1", r"\boxed{2}+1"]
    assert find_boxed(r"no boxes") == []
    assert find_boxed(r"\boxed{a}\fbox{b} \boxed c") == ["a", "b", "c"]

# -----------------------------------------------------------------------------
# equivalence: GSM8K and MATH styles

EQUIV_CASES = [
    # GSM8K: integers, separators, currency, units, decimals
    ("18", "18", True),
    ("18", "19", False),
    ("1,234", "1234", True),
    ("1{,}234", "1234", True),
    ("1,234,567", "1234567", True),
    (r"\$18", "18", True),
    (r"\$18.00", "18", True),
    ("18.0", "18", True),
    ("-5", "-5.0", True),
    ("-5", "5", False),
    ("0.5", ".5", True),
    ("12 dollars", "12", True),
    (r"12 \text{ cm}", "12", True),
    (r"12\text{cm}^2", "12", True),
    (r"\text{12}", "12", True),
    ("1000000", "1000001", False),
    ("x = 7", "7", True),
    ("7.", "7", True),
    ("7", "7.5", False),
    (r"\$1,000.50", "1000.5", True),
    # fractions, mixed numbers, percents
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", "0.75", True),
    (r"\tfrac{3}{4}", r"\frac34", True),
    (r"\frac12", "1/2", True),
    ("2/4", r"\frac{1}{2}", True),
    (r"-\frac{1}{3}", r"\frac{-1}{3}", True),
    (r"\frac{1}{3}", "0.3333333", True),
    (r"\frac{1}{3}", "0.33", False),
    (r"2\frac{1}{2}", "2.5", True),
    ("2 1/2", r"\frac{5}{2}", True),
    (r"2\frac{1}{2}", "1", False),
    (r"50\%", "50", True),
    (r"50\%", "0.5", True),
    ("25%", "0.3", False),
    # degrees, \left \right, spacing, wrappers
    (r"30^\circ", "30", True),
    (r"30^{\circ}", "30", True),
    (r"\left( 1, 2 \right)", "(1,2)", True),
    (r"{5}", "5", True),
    (r"\text{(C)}", "C", True),
    (r"\textbf{Monday}", "monday", True),
    ("Monday", "Tuesday", False),
    # symbolic: roots, pi, algebra
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"3\sqrt{2}", r"\sqrt{18}", True),
    (r"\sqrt{8}", r"2\sqrt{3}", False),
    (r"\sqrt[3]{27}", "3", True),
    (r"\sqrt[3]{-8}", "-2", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\frac{\pi}{4}", r"\frac\pi4", True),
    (r"\frac{\pi}{3}", r"\frac{\pi}{4}", False),
    ("(x+1)^2", "x^2+2x+1", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2+1", "(x+1)^2", False),
    (r"\frac{x^2-4}{x-2}", "x+2", True),
    ("2a+3b", "3b+2a", True),
    ("y = 2x + 3", "2x+3", True),
    (r"\sqrt{2}", "1.41421356", True),
    ("2^{10}", "1024", True),
    ("5!", "120", True),
    ("3+4i", "4i+3", True),
    # tuples, intervals, sets, unions, lists, matrices
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    (r"(\frac{1}{2}, 3)", "(0.5, 3)", True),
    ("[1,3)", "[1, 3)", True),
    ("[1,3)", "(1,3]", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"(-\infty, 3)", r"(-\infty, 3]", False),
    (r"\{1,2,3\}", r"\{3,2,1\}", True),
    (r"\{1,2\}", r"\{1,2,3\}", False),
    (r"(-\infty,1)\cup(2,\infty)", r"(2,\infty)\cup(-\infty,1)", True),
    ("1, -2", "-2, 1", True),
    (r"1\pm\sqrt{2}", r"1+\sqrt{2}, 1-\sqrt{2}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\\frac{4}{2}\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}", False),
    # non-answers
    ("", "5", False),
    (None, "5", False),
    ("banana", "5", False),
]


@pytest.mark.parametrize("pred, gold, expected", EQUIV_CASES)
def test_is_equiv_matches_expected_verdict(pred, gold, expected):
    assert is_equiv(pred, gold) is expected


def test_is_equiv_is_symmetric_on_the_case_list():
    for pred, gold, expected in EQUIV_CASES:
        if pred is not None:
            assert is_equiv(gold, pred) is expected, (gold, pred)


def test_fast_path_agrees_with_fraction_reference():
    # an independent reference: python's Fraction on a/b strings vs \frac and decimals
    from fractions import Fraction
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randint(-50, 50), rng.randint(1, 20)
        c, d = rng.randint(-50, 50), rng.randint(1, 20)
        expected = Fraction(a, b) == Fraction(c, d)
        assert is_equiv(f"\\frac{{{a}}}{{{b}}}", f"{c}/{d}") is expected
        # the \frac{-a}{b} spelling of a negative fraction is parsed the same way
        assert is_equiv(f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}") is True

# -----------------------------------------------------------------------------
# adversarial inputs: bounded time, False

ADVERSARIAL = [
    "9^{9^{9^9}}",
    "10**10**10",
    "1000000!",
    "2^{10^{100}}",
    "x^{100000000}",
    "(x+1)^{1000000}",
    "((2^{100})^{100})^{100}",
    r"\frac{1}{0}",
    "1" * 100_000,
    "(" * 5000 + "1" + ")" * 5000,
    "{" * 3000 + "}" * 3000,
    "(" * 15 + "x" + ")" * 15 + "^" * 30,
    r"\sqrt{" * 200 + "2" + "}" * 200,
    r"\input{/etc/passwd}",
    "__import__('os').system('echo hi')",
    "lambda: 0",
    r"\begin{pmatrix}" + "&".join(["1"] * 400) + r"\end{pmatrix}",
    "x" * 499,
    "+".join(["x^{200}"] * 40),
]


@pytest.mark.parametrize("bad", ADVERSARIAL, ids=[f"adv{i}" for i in range(len(ADVERSARIAL))])
def test_adversarial_answer_returns_false_within_bound(bad):
    t0 = time.monotonic()
    assert is_equiv(bad, "42") is False
    assert time.monotonic() - t0 < 3.0


def _slow_symbolic_equiv(pred, gold):
    time.sleep(30)
    return True


def test_timed_out_worker_is_killed_and_replaced(monkeypatch):
    # the worker is forked from this process, so a patched module function is what it runs:
    # a check that never finishes in time gives False within the bound, the worker is
    # killed, and the next call starts a fresh (unpatched) one that answers correctly
    rewards._stop_worker()
    rewards._symbolic_cache.clear()
    monkeypatch.setattr(rewards, "symbolic_equiv", _slow_symbolic_equiv)
    t0 = time.monotonic()
    assert rewards._symbolic_equiv_bounded("(x+1)^2", "x^2+2x+1", timeout=0.3) is False
    assert time.monotonic() - t0 < 3.0
    assert rewards._worker is None
    monkeypatch.undo()
    rewards._symbolic_cache.clear()
    assert is_equiv("(x+1)^2", "x^2+2x+1") is True
    assert rewards._worker is not None and rewards._worker[0].is_alive()


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


def test_calibration_zero_inside_band_and_huber_outside():
    rng = random.Random(2)
    delta, band, w = DEFAULTS["huber_delta"], DEFAULTS["band"], DEFAULTS["w_cal"]
    for _ in range(N_DRAWS):
        c, r = rng.choice(BUDGETS), rng.uniform(0.0, 2.0)
        pen = calibration_penalty(c, r)
        excess = abs(r - c) - band
        if excess <= 0:
            assert pen == 0.0
        else:
            # independent reference: torch's smooth-L1 with beta = delta
            ref = w * torch.nn.functional.smooth_l1_loss(
                torch.tensor(excess, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
                beta=delta).item()
            assert pen == pytest.approx(ref, abs=1e-12)
            assert pen > 0
    # quadratic just past the band (doubling the excess quadruples it), linear far away
    p1, p2 = calibration_penalty(0.4, 0.4 + band + delta / 4), calibration_penalty(0.4, 0.4 + band + delta / 2)
    assert p2 == pytest.approx(4 * p1)
    far = [calibration_penalty(0.2, 0.2 + band + delta + k * 0.1) for k in range(4)]
    steps = [b - a for a, b in zip(far, far[1:])]
    assert steps == pytest.approx([w * 0.1] * 3)


def test_calibration_moves_r_main_only_outside_band():
    rng = random.Random(3)
    for _ in range(N_DRAWS):
        c, g = rng.choice(BUDGETS), rng.choice(BUDGETS + [None])
        r_in = c + rng.uniform(-0.1, 0.1)
        r_in2 = c + rng.uniform(-0.1, 0.1)
        # incorrect: the mode term does not depend on r, so R_main is flat inside the band
        assert r_main(False, True, c, max(r_in, 0), g) == r_main(False, True, c, max(r_in2, 0), g)
        r_out = c + rng.choice([-1, 1]) * rng.uniform(0.15, 0.6)
        if r_out >= 0:
            assert r_main(False, True, c, r_out, g) < r_main(False, True, c, max(r_in, 0), g)


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
        # with calibration neutral (both inside the band) R_main follows the same order
        v1, v2 = r_main(True, True, c, r1, g), r_main(True, True, c, r2, g)
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
    assert r_main(True, True, 0.2, 0.1, None, kappa=0.05) == pytest.approx(1.05)
    assert mode_term(False, 0.2, 0.2, 0.8, use_mode_term=False) == 0.0
    with pytest.raises(KeyError, match="kapa"):
        r_main(True, True, 0.2, 0.2, None, kapa=0.1)
    with pytest.raises(ValueError, match="tier_clip"):
        r_main(True, True, 0.2, 0.2, None, tier_clip=0.6)
    with pytest.raises(ValueError, match="c=1.5"):
        r_ctrl(1.5, 0.4, True)
    with pytest.raises(ValueError, match="realized ratio"):
        r_main(True, True, 0.4, None, 0.4)
