"""CHRPO reward magnitudes (rewards.r_main, r_ctrl, rollout_rewards) against values worked
out by hand from the formulas in rewards.py's docstring, with explicit constants that are
all distinct from each other and from rewards.DEFAULTS. The order-of-values properties live
in test_rewards.py; these catch a swapped constant, lambda_over used where lambda_under
belongs, a wrong Huber branch or a missing clip.

    python -m pytest tests/test_reward_values.py -q
"""
import pytest

from rewards import r_ctrl, r_main, rollout_rewards

# distinct, non-default constants (every one differs from the others used in a formula)
C = dict(band=0.05, huber_delta=0.2, w_cal=0.7, w_center=0.0, w_short=0.9, kappa=0.35, w_mode=0.6,
         lambda_under=0.55, lambda_over=0.15, tier_clip=0.4, invalid_reward=-1.3)


@pytest.mark.parametrize('correct, c, r, g_star, expected, why', [
    # correct, inside the band (|0.42 - 0.4| = 0.02 <= 0.05): 1 + min(kappa 0.35, 0.9 * 0.58) = 1.35
    (True, 0.4, 0.42, 0.6, 1.35, 'shortness capped at kappa'),
    # correct, excess 0.4 - 0.05 = 0.35 > delta: huber = 0.35 - 0.1 = 0.25, cal = 0.175;
    # mode = min(0.35, 0.9 * 0.2) = 0.18 -> 1 + 0.005
    (True, 0.4, 0.8, None, 1.005, 'linear Huber branch, uncapped shortness'),
    # correct, excess 0.1 - 0.05 = 0.05 <= delta: huber = 0.05^2 / 0.4 = 0.00625, cal = 0.004375;
    # mode = min(0.35, 0.45) = 0.35 -> 1.345625
    (True, 0.6, 0.5, 0.6, 1.345625, 'quadratic Huber branch'),
    # incorrect, c < g*: -w_mode * lambda_under = -0.33 (inside the band)
    (False, 0.2, 0.22, 0.6, -0.33, 'under the teacher budget'),
    # incorrect, c >= g*: -w_mode * lambda_over = -0.09
    (False, 0.6, 0.62, 0.6, -0.09, 'at the teacher budget'),
    (False, 0.8, 0.83, 0.4, -0.09, 'over the teacher budget'),
    # incorrect, all-fail question: no mode term; excess 0.45: huber 0.35, cal 0.245
    (False, 0.8, 0.3, None, -0.245, 'calibration only'),
    # correct, excess 0.75: huber 0.65, cal 0.455; mode min(0.35, 0) = 0 -> clip at -0.4 -> 0.6
    (True, 0.2, 1.0, 0.2, 0.6, 'tier clip from below'),
    # correct, r > 1: mode = 0.9 * (1 - 1.3) = -0.27; excess 0.25: huber 0.15, cal 0.105 -> 1 - 0.375
    (True, 1.0, 1.3, 1.0, 0.625, 'thinking longer than the reference costs in the mode term'),
])
def test_r_main_equals_hand_computed_value(correct, c, r, g_star, expected, why):
    assert r_main(correct, True, c, r, g_star, **C) == pytest.approx(expected, abs=1e-12), why


@pytest.mark.parametrize('correct, c, r, g_star, expected, why', [
    # w_center 0.45: inside the band (|0.42 - 0.4| = 0.02) the penalty is 0.45 * 0.02 = 0.009 -> 1.35 - 0.009
    (True, 0.4, 0.42, 0.6, 1.341, 'linear pull toward c inside the band'),
    (True, 0.4, 0.38, 0.6, 1.341, 'the same pull from below'),
    # past the band the in-band part is spent: 0.45 * 0.05 = 0.0225, plus cal 0.175; mode 0.18 -> 1 - 0.0175
    (True, 0.4, 0.8, None, 0.9825, 'in-band part capped at band, then Huber'),
    # incorrect, all-fail question: 0.0225 + 0.245
    (False, 0.8, 0.3, None, -0.2675, 'calibration only'),
])
def test_r_main_with_centering_equals_hand_computed_value(correct, c, r, g_star, expected, why):
    assert r_main(correct, True, c, r, g_star, **{**C, 'w_center': 0.45}) == pytest.approx(expected, abs=1e-12), why


def test_r_main_tier_clip_from_above_and_invalid_reward():
    # kappa above tier_clip: 1 + min(0.45, 0.9 * 0.9 = 0.81) = 1.45 -> clipped to 1 + 0.4
    assert r_main(True, True, 0.2, 0.1, None, **{**C, 'kappa': 0.45}) == pytest.approx(1.4)
    # invalid: invalid_reward whatever else holds
    assert r_main(True, False, 0.4, 0.4, 0.4, **C) == -1.3
    assert r_main(False, False, None, None, None, **C) == -1.3


def test_r_main_without_mode_term_keeps_only_calibration():
    assert r_main(True, True, 0.4, 0.42, 0.6, use_mode_term=False, **C) == pytest.approx(1.0)
    assert r_main(False, True, 0.2, 0.22, 0.6, use_mode_term=False, **C) == pytest.approx(0.0)
    # excess 0.25 - 0.05 = 0.2 = delta: huber = 0.04 / 0.4 = 0.1 (both branches agree), cal 0.07
    assert r_main(True, True, 0.6, 0.35, 0.6, use_mode_term=False, **C) == pytest.approx(0.93)


@pytest.mark.parametrize('c, g_star, correct, expected, why', [
    (None, 0.4, True, -1.1, 'no control token: -2 * max(lambda_under, lambda_over)'),
    (None, None, False, -1.1, 'no control token on an all-fail question'),
    (0.4, None, True, 1 - 0.55 * 0.6, 'all-fail, correct: 1 - lambda_under * (1 - c)'),
    (0.4, None, False, -0.55 * 0.6, 'all-fail, incorrect: -lambda_under * (1 - c)'),
    (1.0, None, False, 0.0, 'all-fail, full budget'),
    (0.8, 0.4, True, 0.6, 'correct over g*: 1 - (c - g*)'),
    (0.4, 0.4, True, 1.0, 'correct at g*'),
    (0.2, 0.8, True, 1.35, 'correct far under g*: 1 + kappa'),
    (0.6, 0.8, True, 1.2, 'correct just under g*: 1 + (g* - c)'),
    (0.2, 0.6, False, -0.55 * 1.4, 'incorrect under g*: -lambda_under * (1 + g* - c)'),
    (0.6, 0.4, False, -0.15, 'incorrect over g*: -lambda_over'),
    (0.6, 0.6, False, -0.15, 'incorrect at g*: -lambda_over'),
])
def test_r_ctrl_equals_hand_computed_value(c, g_star, correct, expected, why):
    assert r_ctrl(c, g_star, correct, **C) == pytest.approx(expected, abs=1e-12), why


@pytest.mark.parametrize('c, g_star, correct, r, expected, why', [
    (0.2, 0.4, True, 0.23, 1.2, 'kept (|r - c| = 0.03 <= band 0.05): beat the teacher, 1 + min(kappa, g* - c)'),
    (0.2, 0.4, True, 0.35, -0.55 * 1.2, 'thought past the band: as incorrect under g*, -lambda_under * (1 + g* - c)'),
    (0.6, 0.4, True, 0.45, -0.15, 'under-ran past the band: as incorrect over g*, -lambda_over'),
    (0.6, 0.4, True, 0.63, 0.8, 'kept: 1 - (c - g*)'),
    (0.2, None, True, 0.5, 1 - 0.55 * 0.8, 'all-fail question: rapid recovery, r not judged'),
])
def test_r_ctrl_with_realized_ratio_equals_hand_computed_value(c, g_star, correct, r, expected, why):
    assert r_ctrl(c, g_star, correct, r, **C) == pytest.approx(expected, abs=1e-12), why


def test_r_ctrl_prices_a_budget_above_the_teacher_at_w_over():
    # correct and kept, c = 0.8 over g* = 0.4: 1 - w_over * 0.4; w_over does not touch c < g* or a failure
    assert r_ctrl(0.8, 0.4, True, 0.82, **{**C, 'w_over': 0.3}) == pytest.approx(1 - 0.3 * 0.4)
    assert r_ctrl(0.2, 0.4, True, 0.23, **{**C, 'w_over': 0.3}) == pytest.approx(1.2)
    assert r_ctrl(0.8, 0.4, False, 0.82, **{**C, 'w_over': 0.3}) == pytest.approx(-0.15)


def test_r_ctrl_without_control_token_uses_the_larger_lambda():
    assert r_ctrl(None, 0.4, False, **{**C, 'lambda_under': 0.1, 'lambda_over': 0.3}) == pytest.approx(-0.6)


def test_rollout_rewards_pairs_hand_computed_r_main_and_r_ctrl():
    # correct, c = 0.4, r = 0.42, g* = 0.6: R_main 1.35 (see above); R_ctrl 1 + min(0.35, 0.2) = 1.2
    assert rollout_rewards(True, True, 0.4, 0.42, 0.6, **C) == pytest.approx((1.35, 1.2))
    # incorrect under g*: R_main -0.33, R_ctrl -0.55 * 1.4
    assert rollout_rewards(False, True, 0.2, 0.22, 0.6, **C) == pytest.approx((-0.33, -0.77))
    # invalid (truncated) but a budget was chosen: R_main invalid_reward, R_ctrl still judges c
    assert rollout_rewards(False, False, 0.6, None, 0.4, **C) == pytest.approx((-1.3, -0.15))
