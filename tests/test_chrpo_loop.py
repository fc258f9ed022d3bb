"""The real CHRPO reward and loop wired together (train_chrpo.py, chrpo_loss.py): rollout_reward on graded
rollouts (realized ratio, truncation, the length-cap fallback), the loss at the sampling
temperature, the k3 KL sign, the stop token's gradient, and one real main() step on a tiny
random model whose sampler is scripted (everything after the sampler is the real code:
sample_and_grade, grade, rollout_reward, group advantages, placement, skipping, the update).
Expected values are worked out by hand from the CHRPO design (train_chrpo.py's docstring and
rewards.py); reward constants are explicit non-default overrides, so the tests do not depend
on rewards.DEFAULTS."""
import json
import statistics

import pytest
import torch

import chrpo_loss as cl
import evaluate
import rewards
import sampler
import train_chrpo as tc
from common import save_checkpoint
from digest import param_digest
from corpus import generate_corpus, tokenizer_training_texts
from model import Qwen3, Qwen3Config
from tokenizer import train_tokenizer

# distinct, non-default reward constants
C = dict(band=0.05, huber_delta=0.2, w_cal=0.7, w_center=0.0, w_short=0.9, kappa=0.35, w_mode=0.6,
         lambda_under=0.55, lambda_over=0.15, tier_clip=0.4, invalid_reward=-1.3)
T = 0.7          # rollout temperature (not 1, so a loss at the wrong temperature shows)
MAX_NEW = 48     # rollout length cap: the realized-ratio denominator without ref_full_len
G = 4            # rollouts per question
LOSS = dict(temperature=T, eps_low=0.2, eps_high=0.28, kl_coef=0.0)  # micro_batch_loss settings


@pytest.fixture(scope='module')
def tok():
    corpus = generate_corpus({'train': 120}, seed=11)
    return train_tokenizer(tokenizer_training_texts(corpus['train']), vocab_size=400)


def tiny_model(vocab, seed=0):
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                      tie_word_embeddings=False, torch_dtype='float32')
    return Qwen3(cfg).init_weights(seed=seed)


def rollout_ids(tok, c, n_think, answer, stop=True):
    """Generated ids: [budget token] \\n <think> n_think digit ids </think> answer [<|im_end|>]."""
    digits = tok.encode('0123456789')
    ids = [tok.budget_ids[c]] if c else []
    ids += tok.encode('\n') + [tok.think_start_id] + (digits * 10)[:n_think] + [tok.think_end_id]
    ids += tok.encode('\n\nThe answer is \\boxed{' + answer + '}.')
    return ids + ([tok.eos_id] if stop else [])


def tempered_logprobs(model, prompt, tokens, temperature):
    """Independent reference: log softmax(logits / T) of each response token."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0, :-1].double()
    logp = torch.log_softmax(logits / temperature, -1)
    P = len(prompt)
    return [logp[P - 1 + k, t].item() for k, t in enumerate(tokens)]


# -----------------------------------------------------------------------------
# rollout_reward on hand-made graded rollouts


def sample(correct, c, think, finish='stop', closed=True, boxes=1):
    answer = ' '.join(['\\boxed{19}'] * boxes)
    return {'correct': correct, 'budget': c, 'think_tokens': think if closed else None, 'finish_reason': finish,
            'tokens': list(range(1, 21)),
            'parsed': {'budget': c, 'think_closed': closed, 'answer_text': answer, 'text': 'x'}}


@pytest.fixture
def reward_config():
    """rollout_reward's settings: the constants C, the length cap MAX_NEW, the mode term on."""
    return dict(max_new_tokens=MAX_NEW, reward_overrides=dict(C), use_mode_term=True)


def test_rollout_reward_ratio_uses_ref_full_len(reward_config):
    # n = 9, L = 40: r = 0.225; |r - c| = 0.025 inside the band; mode = min(0.35, 0.9 * 0.775) = 0.35
    rm, rc, info = tc.rollout_reward(sample(True, '0.2', 9), {'g_star': 0.4, 'ref_full_len': 40.0}, **reward_config)
    assert info['r'] == pytest.approx(0.225) and info['c'] == 0.2 and info['valid'] is True
    assert rm == pytest.approx(1.35)
    assert rc == pytest.approx(1 + min(0.35, 0.4 - 0.2))  # correct under g*


def test_rollout_reward_without_ref_full_len_divides_by_length_cap(reward_config):
    # L = max_new_tokens = 48: n = 24 -> r = 0.5; c = 0.8: excess 0.25, huber 0.15, cal 0.105;
    # incorrect with c >= g* = 0.6: mode = -0.6 * 0.15 = -0.09 -> R_main = -0.195
    rm, rc, info = tc.rollout_reward(sample(False, '0.8', 24), {'g_star': 0.6, 'ref_full_len': None}, **reward_config)
    assert info['r'] == pytest.approx(0.5)
    assert rm == pytest.approx(-0.195) and rc == pytest.approx(-0.15)


def test_truncated_rollout_earns_invalid_reward(reward_config):
    # a closed think and one box, but the sampler hit the length cap: invalid
    rm, rc, info = tc.rollout_reward(sample(False, '0.4', 10, finish='length'), {'g_star': 0.4, 'ref_full_len': 40},
                                     **reward_config)
    assert info['valid'] is False and rm == pytest.approx(-1.3)
    assert rc == pytest.approx(-0.15)  # R_ctrl still judges the chosen budget (c >= g*)
    rm, _, info = tc.rollout_reward(sample(False, '0.4', 10, boxes=2), {'g_star': 0.4, 'ref_full_len': 40},
                                    **reward_config)
    assert info['valid'] is False and rm == pytest.approx(-1.3)


def test_rollout_reward_passes_mode_switch(reward_config):
    rm, _, _ = tc.rollout_reward(sample(True, '0.2', 9), {'g_star': 0.4, 'ref_full_len': 40.0},
                                 **dict(reward_config, use_mode_term=False))
    assert rm == pytest.approx(1.0)  # no shortness bonus, inside the band


# -----------------------------------------------------------------------------
# the loss: temperature, KL sign, the stop token


def hand_rollouts(tok, model):
    out = []
    for prompt, (c, n, ans) in [([5, 6, 7], ('0.4', 6, '19')), ([8, 9], ('0.8', 3, '7'))]:
        toks = rollout_ids(tok, c, n, ans)
        out.append({'prompt_ids': prompt, 'tokens': toks, 'logp_old': tempered_logprobs(model, prompt, toks, T),
                    'token_adv': [1.0] * len(toks)})
    return out


def test_loss_log_probs_are_taken_at_the_sampling_temperature(tok):
    model = tiny_model(tok.vocab_size, seed=1)
    rollouts = hand_rollouts(tok, model)
    n = sum(len(r['tokens']) for r in rollouts)
    loss, st = cl.micro_batch_loss(model, model, None, rollouts, n, 1, tok.pad_id, 'cpu', **LOSS)
    # on-policy at temperature T: rho = 1 on every token, so l_t = -A_t = -1 and the mean is -1
    assert loss.item() == pytest.approx(-1.0, abs=1e-4)
    assert st['tokens'] == n and st['clipped'] == 0 and abs(st['approx_kl']) < 1e-3


def test_k3_kl_term_is_added_with_its_coefficient(tok):
    model, ref = tiny_model(tok.vocab_size, seed=1), tiny_model(tok.vocab_size, seed=2)
    rollouts = hand_rollouts(tok, model)
    for r in rollouts:
        r['token_adv'] = [0.0] * len(r['tokens'])  # the surrogate is 0: the loss is the KL term alone
    n = sum(len(r['tokens']) for r in rollouts)
    k3 = 0.0
    for r in rollouts:
        new = tempered_logprobs(model, r['prompt_ids'], r['tokens'], T)
        old = tempered_logprobs(ref, r['prompt_ids'], r['tokens'], T)
        k3 += sum(torch.expm1(torch.tensor(o - w)).item() - (o - w) for o, w in zip(old, new))
    loss, st = cl.micro_batch_loss(model, model, ref, rollouts, n, 1, tok.pad_id, 'cpu', **dict(LOSS, kl_coef=0.3))
    assert k3 > 0.01
    assert loss.item() == pytest.approx(0.3 * k3 / n, rel=1e-4)
    assert st['kl_ref'] == pytest.approx(k3, rel=1e-4)


def test_stop_token_is_a_target_and_carries_gradient(tok):
    model = tiny_model(tok.vocab_size, seed=1)
    r = hand_rollouts(tok, model)[0]
    assert r['tokens'][-1] == tok.eos_id
    r['token_adv'] = [0.0] * (len(r['tokens']) - 1) + [1.0]  # only the decision to stop is rewarded
    x, y, old, adv = cl.pack_rollouts([r], tok.pad_id, 'cpu')
    last = len(r['prompt_ids']) + len(r['tokens']) - 2  # the position that predicts <|im_end|>
    assert y[0, last].item() == tok.eos_id and adv[0, last].item() == 1.0
    assert old[0, last].item() == pytest.approx(r['logp_old'][-1])
    loss, _ = cl.micro_batch_loss(model, model, None, [r], len(r['tokens']), 1, tok.pad_id, 'cpu', **LOSS)
    loss.backward()
    # d(-logp(eos)) / d(lm_head row of eos) = -(1 - p(eos)) h / T: nonzero
    assert model.lm_head.weight.grad[tok.eos_id].abs().sum() > 0
    assert loss.item() == pytest.approx(-1.0 / len(r['tokens']), abs=1e-5)


# -----------------------------------------------------------------------------
# one real main() step


# per question: (g_star, ref_full_len, answer, G rollouts of (c, n_think, answer given, stopped))
SCRIPT = [
    # mixed outcomes: correct / incorrect / correct / truncated
    (0.4, 40.0, '19', [('0.2', 8, '19', True), ('0.4', 16, '18', True), ('0.6', 24, '19', True),
                       ('0.4', 17, '19', False)]),
    # no ref_full_len: the ratio's denominator is the length cap (48)
    (0.8, None, '7', [('0.2', 12, '7', True), ('0.6', 24, '7', True), ('0.8', 24, '3', True),
                      ('1.0', 12, '7', True)]),
    # all truncated: R_main is the same for all, only R_ctrl (all-fail: -lambda_under (1 - c)) varies
    (None, 40.0, '5', [('0.2', 8, '5', False), ('0.4', 8, '5', False), ('0.8', 8, '5', False),
                       ('1.0', 8, '5', False)]),
    # four identical rollouts: no signal, dropped
    (0.6, 40.0, '2', [('0.6', 20, '2', True)] * 4),
]


def hand_rewards(g_star, ref, gold, c, n, given, stopped):
    """(R_main, R_ctrl, r) by the CHRPO design: r = n / (ref_full_len or the length cap); truncated
    = invalid; correct only when stopped and right."""
    L = ref or MAX_NEW
    r = n / L
    correct = stopped and given == gold
    return (rewards.r_main(correct, stopped, float(c), r, g_star, **C),
            rewards.r_ctrl(float(c), g_star, correct, r, **C), r)


STD_FLOOR = 0.3  # the loop's adv_std_floor in these tests (a group std below it is raised to it)


def norm(xs):
    m, s = statistics.fmean(xs), statistics.pstdev(xs)
    return [0.0] * len(xs) if s < 1e-8 else [(x - m) / (max(s, STD_FLOOR) + 1e-6) for x in xs]


@pytest.fixture
def loop_run(tok, tmp_path, monkeypatch):
    """Runs main() for one step with the scripted sampler; returns what reached the update."""
    model = tiny_model(tok.vocab_size, seed=4)
    ckpt = save_checkpoint(str(tmp_path / 'sft'), model, tok)
    items = [{'id': f'q{i}', 'question': f'What is {i} plus {i + 3}?', 'answer': s[2]} for i, s in enumerate(SCRIPT)]
    (tmp_path / 'rl.jsonl').write_text(''.join(json.dumps(it) + '\n' for it in items))
    (tmp_path / 'teacher.jsonl').write_text(''.join(
        json.dumps({'id': it['id'], 'g_star': s[0], 'ref_full_len': s[1]}) + '\n' for it, s in zip(items, SCRIPT)))
    prompt_of = {tuple(evaluate.build_prompts(tok, [it], 'auto')[0]): i for i, it in enumerate(items)}
    calls, seen, sampled_with = [], [], []

    def scripted_generate(model, prompts, n=1, temperature=1.0, top_p=1.0, **kw):
        calls.append({'n': n, 'temperature': temperature, 'top_p': top_p, 'max_new_tokens': kw['max_new_tokens']})
        sampled_with.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        outs = []
        for p_i, p in enumerate(prompts):
            for c, k, given, stopped in SCRIPT[prompt_of[tuple(p)]][3]:
                toks = rollout_ids(tok, c, k, given, stopped)
                outs.append({'prompt_index': p_i, 'tokens': toks, 'finish_reason': 'stop' if stopped else 'length',
                             'logprobs': tempered_logprobs(model, p, toks, temperature)})
        return outs

    real_update = tc.policy_update

    def spy_update(ddp_model, model, ref_model, optimizer, rollouts, *a, **kw):
        seen.extend({'id': r['id'], 'tokens': list(r['tokens']), 'logprobs': list(r['logprobs']),
                     'token_adv': list(r['token_adv'])} for r in rollouts)
        return real_update(ddp_model, model, ref_model, optimizer, rollouts, *a, **kw)

    monkeypatch.setattr(sampler, 'generate', scripted_generate)
    monkeypatch.setattr(tc, 'policy_update', spy_update)
    cfg = dict(init_from=ckpt, tokenizer_path='', rl_path=str(tmp_path / 'rl.jsonl'),
               teacher_path=str(tmp_path / 'teacher.jsonl'), stage='train', out_dir=str(tmp_path / 'out'),
               max_iters=1, questions_per_step=len(SCRIPT), group_size=G, max_new_tokens=MAX_NEW, temperature=T,
               top_p=1.0, mu=1, micro_batch_tokens=400, learning_rate=1e-2, kl_coef=0.0, reward_overrides=dict(C),
               adv_std_floor=STD_FLOOR,
               use_ctrl_reward=True, use_mode_term=True, skip_uniform_groups=True, resume=False, autocast_dtype='float32',
               sample_dtype='auto', compile=False,
               ckpt_interval=10, max_rl_questions=0, warmup_iters=0, grad_clip=1.0)

    def run(**kw):
        for k, v in {**cfg, **kw}.items():
            monkeypatch.setattr(tc, k, v)
        seen.clear()
        out = tc.main()
        rows = [json.loads(l) for l in (tmp_path / 'out' / 'metrics.jsonl').read_text().splitlines()]
        return {'model': out, 'init': model, 'seen': list(seen), 'calls': calls, 'metrics': rows[-1],
                'sampled_with': sampled_with}
    return run


def expected_token_advantages(tok, use_ctrl=True, ctrl_weight=1.0):
    """{question index: [per-rollout token advantages]} for the groups that must be kept
    (the control token's advantage times ctrl_weight)."""
    want = {}
    for qi, (g_star, ref, gold, group) in enumerate(SCRIPT):
        rs = [hand_rewards(g_star, ref, gold, *ro) for ro in group]
        a_main = norm([x[0] for x in rs])
        a_ctrl = norm([x[1] for x in rs]) if use_ctrl else [0.0] * G
        if not any(a_main) and not any(a_ctrl):
            continue
        want[qi] = [[(ac if use_ctrl else am) * ctrl_weight] + [am] * (len(rollout_ids(tok, *ro)) - 1)
                    for ro, am, ac in zip(group, a_main, a_ctrl)]
    return want



def test_one_real_step_places_hand_computed_advantages(loop_run, tok):
    res = loop_run()
    # the sampler ran once, at the rollout temperature, top_p 1, the length cap, G samples each
    assert res['calls'] == [{'n': G, 'temperature': T, 'top_p': 1.0, 'max_new_tokens': MAX_NEW}]
    want = expected_token_advantages(tok)
    assert sorted(want) == [0, 1, 2]  # the R_ctrl-only group (2) is kept, the uniform one (3) dropped
    by_id = {}
    for r in res['seen']:
        by_id.setdefault(r['id'], []).append(r)
    assert sorted(by_id) == ['q0', 'q1', 'q2']
    for qi, advs in want.items():
        got = by_id[f'q{qi}']
        assert len(got) == G
        for ro, g, adv in zip(SCRIPT[qi][3], got, advs):
            # tokens reach the update unchanged, stop token and its log-prob included
            assert g['tokens'] == rollout_ids(tok, *ro)
            assert len(g['logprobs']) == len(g['tokens'])
            assert (g['tokens'][-1] == tok.eos_id) == ro[3]
            assert g['token_adv'] == pytest.approx(adv, abs=1e-6)
    # the R_ctrl-only group: A_main is 0, only the control tokens carry advantage
    for g in by_id['q2']:
        assert not any(g['token_adv'][1:]) and g['token_adv'][0] != 0
    m = res['metrics']
    assert m['skipped_groups'] == 1
    hand = [hand_rewards(*s[:3], *ro) for s in SCRIPT for ro in s[3]]
    assert m['reward_main'] == pytest.approx(statistics.fmean(x[0] for x in hand))
    assert m['reward_ctrl'] == pytest.approx(statistics.fmean(x[1] for x in hand))
    assert m['realized_ratio'] == pytest.approx(statistics.fmean(x[2] for x in hand))
    assert m['valid'] == pytest.approx(sum(ro[3] for s in SCRIPT for ro in s[3]) / (G * len(SCRIPT)))
    # the behaviour log-probs were taken at T and the loss uses T: on-policy, nothing clipped
    assert abs(m['approx_kl']) < 1e-4 and m['clip_frac'] == 0
    assert param_digest(res['model'].state_dict()) != param_digest(res['init'].state_dict())


def test_one_real_step_without_ctrl_reward_gives_control_token_a_main(loop_run, tok):
    res = loop_run(use_ctrl_reward=False)
    want = expected_token_advantages(tok, use_ctrl=False)
    assert sorted(want) == [0, 1]  # without R_ctrl the all-truncated group has no signal
    assert res['metrics']['skipped_groups'] == 2
    got = {}
    for r in res['seen']:
        got.setdefault(r['id'], []).append(r['token_adv'])
    assert sorted(got) == ['q0', 'q1']
    for qi, advs in want.items():
        for g, adv in zip(got[f'q{qi}'], advs):
            assert g == pytest.approx(adv, abs=1e-6)


def test_control_token_weight_scales_only_the_control_advantage(loop_run, tok):
    """ctrl_token_weight multiplies the control token's advantage (R_ctrl's, or A_main's without
    R_ctrl) and leaves every think and answer token's A_main as it was."""
    for use_ctrl in (True, False):
        res = loop_run(ctrl_token_weight=3.0, use_ctrl_reward=use_ctrl)
        want = expected_token_advantages(tok, use_ctrl=use_ctrl, ctrl_weight=3.0)
        got = {}
        for r in res['seen']:
            got.setdefault(r['id'], []).append(r['token_adv'])
        assert sorted(got) == [f'q{qi}' for qi in sorted(want)]
        for qi, advs in want.items():
            for g, adv in zip(got[f'q{qi}'], advs):
                assert g == pytest.approx(adv, abs=1e-6)


def test_saved_rollouts_hold_hand_computed_rewards_and_survive_a_resume(loop_run, tok, tmp_path):
    """save_rollouts writes one row per rollout with its chosen budget, ratio, both rewards and
    both (unweighted) advantages; a resumed run drops the rows of the steps it replays."""
    loop_run(save_rollouts=True, ctrl_token_weight=3.0)
    path = tmp_path / 'out' / 'rollouts.jsonl'
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert len(rows) == G * len(SCRIPT) and {r['step'] for r in rows} == {1}
    for qi, (g_star, ref, gold, group) in enumerate(SCRIPT):
        got = [r for r in rows if r['id'] == f'q{qi}']
        hand = [hand_rewards(g_star, ref, gold, *ro) for ro in group]
        a_main, a_ctrl = norm([h[0] for h in hand]), norm([h[1] for h in hand])
        kept = any(a_main) or any(a_ctrl)
        for r, ro, h, am, ac in zip(got, group, hand, a_main, a_ctrl):
            assert r['budget'] == ro[0] and r['g_star'] == g_star
            assert (r['r_main'], r['r_ctrl'], r['ratio']) == pytest.approx(h)
            assert (r['a_main'], r['a_ctrl']) == pytest.approx((am, ac) if kept else (0.0, 0.0), abs=1e-6)
    # a later step's rows, as a run killed after writing them but before its checkpoint leaves them
    with open(path, 'a') as f:
        f.write(json.dumps({**rows[0], 'step': 2}) + '\n')
    loop_run(save_rollouts=True, resume=True, max_iters=2)
    steps = [json.loads(l)['step'] for l in path.read_text().splitlines()]
    assert steps == [1] * len(rows) + [2] * len(rows)


def test_bf16_compiled_update_samples_from_an_exact_fp32_copy(loop_run, monkeypatch):
    """autocast_dtype='bfloat16' with sample_dtype='float32' and compile: the blocks of the
    training model are compiled, the sampler gets a separate fp32 copy (not the compiled model)
    that equals the master weights exactly after each step, and the update's bf16 log-probs
    differ from the fp32 behaviour log-probs by a little (the metric reads it), not by nothing."""
    compiled = []

    def mark_compiled(self):  # no inductor in tests: mark the blocks a real compile would wrap
        compiled.append(self)
        for block in self.model.layers:
            block.was_compiled = True
        return self
    monkeypatch.setattr(Qwen3, 'compile_blocks', mark_compiled)
    res = loop_run(max_iters=2, autocast_dtype='bfloat16', sample_dtype='float32', compile=True)
    trained, (sampled, step1) = res['model'], res['sampled_with'][-1]  # step 2 sampled with step 1's weights
    assert compiled == [trained] and sampled is not trained
    assert not any(getattr(b, 'was_compiled', False) for b in sampled.model.layers)  # copied before compiling
    assert all(p.dtype == torch.float32 for p in sampled.parameters())
    assert any(not torch.equal(step1[k], v) for k, v in res['init'].state_dict().items())
    for k, v in trained.state_dict().items():
        assert torch.equal(sampled.state_dict()[k], v), k  # refreshed after step 2, unrounded
    assert 0 < res['metrics']['sampler_logp_gap'] < 0.05
    assert loop_run()['metrics']['sampler_logp_gap'] < 1e-5  # fp32 update: the same numbers as the sampler's


def test_one_real_step_improves_the_rewarded_rollout(loop_run, tok):
    """After the update the best rollout of group 0 gained log-probability relative to its worst."""
    res = loop_run(learning_rate=1e-3)
    init, new = res['init'], res['model']
    group = SCRIPT[0][3]
    prompt = evaluate.build_prompts(tok, [{'question': 'What is 0 plus 3?'}], 'auto')[0]
    hand = [hand_rewards(*SCRIPT[0][:3], *ro)[0] for ro in group]
    best, worst = group[hand.index(max(hand))], group[hand.index(min(hand))]
    delta = lambda ro: (sum(tempered_logprobs(new, prompt, rollout_ids(tok, *ro), T))
                        - sum(tempered_logprobs(init, prompt, rollout_ids(tok, *ro), T)))
    assert delta(best) > delta(worst) + 0.05


def test_policy_update_normalizes_each_mini_batch_by_its_own_token_count(tok, monkeypatch):
    """mu optimizer steps; each divides by the token count of its own mini-batch (every
    rollout in exactly one), accumulated over micro-batches of at most micro_batch_tokens padded
    tokens (10 here: at most 2 of these rollouts)."""
    model = tiny_model(tok.vocab_size, seed=1)
    rollouts = [{'prompt_ids': [5, 6], 'tokens': list(range(10, 10 + k)), 'logprobs': [-1.0] * k,
                 'token_adv': [0.5] * k, 'tag': k} for k in (2, 3, 4, 5, 7)]
    events = []

    def spy_loss(ddp_model, raw_model, ref_model, mbatch, global_tokens, *a, **kw):
        events.append(('micro', [r['tag'] for r in mbatch], global_tokens))
        return real_loss(ddp_model, raw_model, ref_model, mbatch, global_tokens, *a, **kw)

    class Opt:
        def step(self):
            events.append(('step',))

        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

    real_loss = cl.micro_batch_loss
    monkeypatch.setattr(cl, 'micro_batch_loss', spy_loss)
    cl.policy_update(model, model, None, Opt(), rollouts, 1, tok.pad_id, 'cpu', mu=2, micro_batch_tokens=10, grad_clip=1.0,
                     **LOSS)
    assert [e[0] for e in events].count('step') == 2
    seen, mini = [], []
    for e in events:
        if e[0] == 'micro':
            assert 1 <= len(e[1]) <= 2
            mini.append(e)
        else:
            tags = [t for m in mini for t in m[1]]
            assert all(m[2] == sum(tags) for m in mini)  # tag = token count of the rollout
            seen += tags
            mini = []
    assert sorted(seen) == [2, 3, 4, 5, 7]
