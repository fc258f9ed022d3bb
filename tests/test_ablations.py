"""The CHRPO ablation switches change exactly the reward terms they name, over a grid of
rollouts (rewards.rollout_rewards) and through the trainer's scoring of whole groups
(train_chrpo.score_groups): use_mode_term=False removes the ratio-mode term from R_main and
nothing else; use_ctrl_reward=False gives the control token the R_main advantage and leaves
every other token's advantage as it was. (Single values and one real loop step are in
test_reward_values.py and test_chrpo_loop.py.)
    python -m pytest tests/test_ablations.py -q
"""
import copy
import itertools

import pytest

import rewards
import train_chrpo as tc

C = dict(band=0.05, huber_delta=0.2, w_cal=0.7, w_center=0.0, w_short=0.9, kappa=0.35, w_mode=0.6,
         lambda_under=0.55, lambda_over=0.15, tier_clip=0.4, invalid_reward=-1.3)  # non-default constants
GRID = list(itertools.product([True, False], [True, False], [None, 0.2, 0.6, 1.0], [0.05, 0.3, 0.65, 1.2],
                              [None, 0.4, 0.8]))  # correct, valid, c, r, g*


def test_without_mode_term_r_main_is_correctness_minus_clipped_calibration_and_r_ctrl_unchanged():
    for correct, valid, c, r, g in GRID:
        full_main, full_ctrl = rewards.rollout_rewards(correct, valid, c, r, g, **C)
        main, ctrl = rewards.rollout_rewards(correct, valid, c, r, g, use_mode_term=False, **C)
        assert ctrl == full_ctrl
        cal = rewards.calibration_penalty(c, r, **C)
        want = C['invalid_reward'] if not valid else float(correct) + max(-C['tier_clip'], -cal)
        assert main == pytest.approx(want, abs=1e-12), (correct, valid, c, r, g)
        mode = rewards.mode_term(correct, c, r, g, **C)
        if valid and abs(mode - cal) < C['tier_clip'] and cal < C['tier_clip']:  # no clipping: exactly the term
            assert full_main - main == pytest.approx(mode, abs=1e-12)


def rollout(correct, c, think, finish='stop'):
    """A graded POLICY rollout as sample_and_grade returns it (what rollout_reward reads)."""
    return {'correct': correct, 'budget': c, 'think_tokens': think, 'finish_reason': finish,
            'tokens': [7, 3, 5, 9, 11, 2, 4, 6],
            'parsed': {'budget': c, 'think_closed': True, 'answer_text': '\\boxed{3}', 'text': 'x'}}


ITEMS = [{'id': f'q{i}'} for i in range(4)]
TEACHER = {'q0': {'g_star': 0.4, 'ref_full_len': 40}, 'q1': {'g_star': None, 'ref_full_len': 40},
           'q2': {'g_star': 0.8, 'ref_full_len': 50}, 'q3': {'g_star': 0.6, 'ref_full_len': 30}}
GROUPS = [[rollout(True, '0.4', 17), rollout(False, '0.2', 8), rollout(True, '0.8', 30), rollout(False, '1.0', 41)],
          [rollout(False, '0.2', 9), rollout(False, '1.0', 39, 'length'), rollout(True, '0.6', 25),
           rollout(False, '0.4', 15)],
          [rollout(False, '0.8', 40, 'length'), rollout(False, '0.2', 40, 'length'), rollout(False, '0.6', 9, 'length'),
           rollout(False, '1.0', 50, 'length')],
          [rollout(True, '0.6', 18), rollout(True, '0.4', 12), rollout(False, '0.2', 6), rollout(True, '1.0', 29)]]


def scored(use_ctrl_reward, use_mode_term):
    """{(question, index in group): token advantages} of the groups score_groups keeps."""
    samples = copy.deepcopy([s for g in GROUPS for s in g])
    for i, s in enumerate(samples):
        s['key'] = (ITEMS[i // 4]['id'], i % 4)
    kw = dict(max_new_tokens=64, reward_overrides=dict(C), use_mode_term=use_mode_term)
    kept, _, _, _ = tc.score_groups(samples, ITEMS, TEACHER, 4, kw, 0.25, use_ctrl_reward, True)
    return {s['key']: s['token_adv'] for s in kept}


@pytest.mark.parametrize('use_mode_term', [True, False])
def test_without_ctrl_reward_the_control_token_gets_a_main_and_nothing_else_moves(use_mode_term):
    full, ablated = scored(True, use_mode_term), scored(False, use_mode_term)
    assert set(ablated) <= set(full) and ablated
    for key, adv in ablated.items():
        assert adv == [adv[1]] * len(adv)  # A_main on every token, the control token included
        assert adv[1:] == full[key][1:]  # the other tokens' advantages are untouched
    # q2: every rollout truncated (invalid: one R_main), only R_ctrl varies with the budget:
    # with R_ctrl its control tokens learn from it, without it the group carries no signal
    assert ('q2', 0) in full and ('q2', 0) not in ablated


@pytest.mark.parametrize('use_ctrl_reward', [True, False])
def test_without_mode_term_the_control_token_advantage_is_unchanged(use_ctrl_reward):
    full, ablated = scored(use_ctrl_reward, True), scored(use_ctrl_reward, False)
    if use_ctrl_reward:  # A_ctrl comes from R_ctrl alone, which the mode term does not enter
        for key in set(full) & set(ablated):
            assert ablated[key][0] == full[key][0]
    changed = [key for key in set(full) & set(ablated) if ablated[key][1] != pytest.approx(full[key][1])]
    assert changed  # ... while R_main's advantage on the body does change
