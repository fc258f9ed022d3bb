"""CHRPO property 7, honest budgets: the only way to be paid for shorter thinking is to choose a
smaller budget and keep it. Checked on the default constants (the shipped reward must have it)
and on random constant sets that respect the documented condition w_cal > w_short.

    python -m pytest tests/test_reward_honesty.py -q
"""
import random

import pytest

from rewards import DEFAULTS, r_ctrl, r_main

BUDGETS = [0.2, 0.4, 0.6, 0.8, 1.0]


def _band_budget(r, band):
    """The one budget whose calibration band contains r, or None (r between two bands' edges)."""
    inside = [c for c in BUDGETS if abs(r - c) <= band - 1e-9]
    return inside[0] if len(inside) == 1 else None


def _band_draws(seed, band, teacher_budgets, n=400):
    """(r, the budget whose band holds r, a teacher budget g) for random r, skipping the r that
    fall between two bands."""
    rng = random.Random(seed)
    for _ in range(n):
        r = rng.uniform(0.05, 1.1)
        c_in = _band_budget(r, band)
        if c_in is None:
            continue
        yield r, c_in, rng.choice(teacher_budgets)


def _constant_sets(n=30):
    yield {}
    rng = random.Random(11)
    for _ in range(n):
        w_short = rng.uniform(0.02, 0.3)
        yield dict(w_short=w_short, w_cal=rng.uniform(w_short * 1.5, 2.0), huber_delta=rng.uniform(0.005, 0.05),
                   kappa=rng.uniform(0.02, 0.2), band=rng.choice([0.05, 0.08, 0.1]),
                   w_center=rng.choice([0.0, rng.uniform(0.0, 1.0)]), w_over=rng.uniform(0.1, 1.0))


@pytest.mark.parametrize('cfg', list(_constant_sets()))
def test_choosing_the_budget_that_contains_r_beats_any_larger_budget(cfg):
    band = cfg.get('band', DEFAULTS['band'])
    checked = 0
    for r, c_in, g in _band_draws(12, band, BUDGETS + [None]):
        honest = r_main(True, True, c_in, r, g, **cfg)
        for c_big in (c for c in BUDGETS if c > c_in):
            assert honest > r_main(True, True, c_big, r, g, **cfg), (cfg, r, c_in, c_big)
            if g is not None:  # the control token never pays more for the larger budget either
                assert r_ctrl(c_in, g, True, **cfg) >= r_ctrl(c_big, g, True, **cfg)
                assert r_ctrl(c_in, g, True, r, **cfg) > r_ctrl(c_big, g, True, r, **cfg)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize('cfg', list(_constant_sets()))
def test_under_running_the_chosen_budget_never_pays(cfg):
    # at a fixed chosen budget c, writing below its band earns less than writing at its lower
    # edge once past the Huber zone: the calibration slope w_cal beats the shortness slope w_short
    band = cfg.get('band', DEFAULTS['band'])
    delta = cfg.get('huber_delta', DEFAULTS['huber_delta'])
    w_short, w_cal = cfg.get('w_short', DEFAULTS['w_short']), cfg.get('w_cal', DEFAULTS['w_cal'])
    zone = delta * w_short / w_cal  # the quadratic start of the penalty is flatter than the bonus here
    for c in BUDGETS[1:]:
        edge = c - band
        at_edge = r_main(True, True, c, edge, None, **cfg)
        for k in range(1, 40):
            r = edge - zone * 2 - k * (edge - zone * 2) / 40
            if r <= 0:
                continue
            assert r_main(True, True, c, r, None, **cfg) < at_edge, (cfg, c, r)


def test_earlier_constants_violated_it_which_is_why_they_changed():
    # a correct c = 1.0 rollout at r = 0.76 netted +0.027, more than meeting the budget (r = 1.0),
    # and r = 0.8 (outside the band) beat the band's own edge r = 0.9
    old = dict(w_cal=0.5, huber_delta=0.1, w_short=0.3, kappa=0.2, w_center=0.0)
    assert r_main(True, True, 1.0, 0.76, None, **old) == pytest.approx(1.027)
    assert r_main(True, True, 1.0, 0.76, None, **old) > r_main(True, True, 1.0, 1.0, None, **old)
    assert r_main(True, True, 1.0, 0.8, None, **old) > r_main(True, True, 1.0, 0.9, None, **old)
    assert r_main(True, True, 1.0, 0.76, None) < r_main(True, True, 1.0, 1.0, None)
    assert r_main(True, True, 1.0, 0.8, None) < r_main(True, True, 1.0, 0.9, None)


@pytest.mark.parametrize('cfg', list(_constant_sets()))
def test_the_control_token_is_paid_only_for_a_budget_the_thinking_kept(cfg):
    # among correct rollouts with the same realized ratio r, the budget whose band contains r
    # earns the control token more than any other, smaller or larger, whatever the teacher said;
    # naming a small budget and thinking past it earns what a wrong answer at that budget earns
    band = cfg.get('band', DEFAULTS['band'])
    checked = 0
    for r, c_in, g in _band_draws(13, band, BUDGETS):
        for c in BUDGETS:
            if c == c_in:
                continue
            assert r_ctrl(c_in, g, True, r, **cfg) > r_ctrl(c, g, True, r, **cfg), (cfg, r, c_in, c, g)
            assert r_ctrl(c, g, True, r, **cfg) == r_ctrl(c, g, False, r, **cfg)
            checked += 1
    assert checked > 400
