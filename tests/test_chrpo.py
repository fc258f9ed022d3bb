"""CHRPO (train_chrpo.py, chrpo_loss.py): teacher budgets, advantage placement, the clipped loss,
micro-batch invariance of token-level normalization, a policy step in the right direction,
two-rank DDP consistency, and kill/resume."""
import json
import os
import subprocess
import sys

import pytest
import torch

import chrpo_loss as cl
import train_chrpo as tc
from corpus import generate_corpus
from digest import param_digest
from model import Qwen3, Qwen3Config
from tokenizer import train_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS = dict(temperature=1.0, eps_low=0.2, eps_high=0.28, kl_coef=0.0)  # micro_batch_loss settings of these tests


# ---- teacher budget rule


def test_teacher_budget_is_smallest_budget_with_solved_suffix():
    B = [0.2, 0.4, 0.6, 0.8, 1.0]
    solved = lambda *flags: dict(zip(B, flags))
    assert tc.teacher_budget(solved(True, True, True, True, True)) == 0.2
    assert tc.teacher_budget(solved(False, True, True, True, True)) == 0.4
    # 0.2 solves it but 0.4 does not: every larger budget must solve it too
    assert tc.teacher_budget(solved(True, False, True, True, True)) == 0.6
    assert tc.teacher_budget(solved(True, True, True, True, False)) is None  # 1.0 fails: all-fail item
    assert tc.teacher_budget(solved(False, False, False, False, False)) is None


def test_teacher_row_ref_full_len_and_all_fail():
    mk = lambda correct, think: {'correct': correct, 'think_tokens': think, 'output': '<think>\nx = 1\n</think>\n\nok'}
    rows = {0.2: [mk(False, 5), mk(False, 6)], 0.4: [mk(True, 9), mk(False, 8)], 0.6: [mk(True, 12), mk(True, 11)],
            0.8: [mk(True, 15), mk(True, 16)], 1.0: [mk(True, 30), mk(True, 20)]}
    item = {'id': 'q1', 'question': 'Q', 'answer': '1'}
    row = tc.teacher_row(item, rows, solve_share=0.5)
    assert row['g_star'] == 0.4 and row['ref_full_len'] == 25.0
    row = tc.teacher_row(item, rows, solve_share=1.0)  # strict: 0.4 has one miss
    assert row['g_star'] == 0.6


# ---- advantages and their placement


def test_group_advantages_normalized_and_uniform_group_zero():
    a = tc.group_advantages([1.0, 0.0, 0.0, 1.0])
    assert a == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-5)
    assert tc.group_advantages([0.3, 0.3, 0.3]) == [0.0, 0.0, 0.0]


def test_control_token_receives_exactly_ctrl_advantage():
    # hand-made group of 3 rollouts; prompts of different lengths
    r_main, r_ctrl = [1.2, -0.4, 0.1], [1.0, -0.6, 1.0]
    a_main, a_ctrl = tc.group_advantages(r_main), tc.group_advantages(r_ctrl)
    rollouts = []
    for i, (prompt, toks) in enumerate([([5, 6, 7], [11, 3, 4, 2]), ([5, 6], [12, 3, 2]), ([5, 6, 7, 8], [13, 9])]):
        rollouts.append({'prompt_ids': prompt, 'tokens': toks, 'logp_old': [-0.5] * len(toks),
                         'token_adv': tc.token_advantages(len(toks), a_main[i], a_ctrl[i])})
    x, y, old, adv = cl.pack_rollouts(rollouts, pad_id=0, device='cpu')
    for b, r in enumerate(rollouts):
        P = len(r['prompt_ids'])
        # the control token (first response token) is predicted at position P - 1
        assert y[b, P - 1].item() == r['tokens'][0]
        assert adv[b, P - 1].item() == pytest.approx(a_ctrl[b])
        # every other response token carries A_main, and nothing outside the response has advantage
        resp = (y[b] != -100).nonzero().flatten().tolist()
        assert resp == list(range(P - 1, P - 1 + len(r['tokens'])))
        for pos in resp[1:]:
            assert adv[b, pos].item() == pytest.approx(a_main[b])
        assert all(adv[b, t].item() == 0 for t in range(adv.shape[1]) if t not in resp)
    # ablation without R_ctrl: the control token gets A_main too
    assert tc.token_advantages(3, 0.7, -2.0, use_ctrl=False) == [0.7, 0.7, 0.7]


# ---- the clipped loss


def test_clipped_surrogate_matches_hand_computed_values():
    old = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.8, 0.3, 0.55, 0.2]))  # rho = 1.6, 0.6, 1.1, 0.4
    adv = torch.tensor([1.0, 1.0, -2.0, -1.0])
    loss, clipped = cl.clipped_surrogate(new, old, adv, 0.2, 0.28)
    # rho=1.6, A=1: min(1.6, 1.28) = 1.28 -> 1.28 loss -1.28, clipped
    # rho=0.6, A=1: min(0.6, 0.8) = 0.6 -> -0.6, not clipped (pessimistic side)
    # rho=1.1, A=-2: min(-2.2, -2.2) -> 2.2, not clipped
    # rho=0.4, A=-1: min(-0.4, -0.8) = -0.8 -> 0.8, clipped
    assert loss.tolist() == pytest.approx([-1.28, -0.6, 2.2, 0.8], abs=1e-5)
    assert clipped.tolist() == [True, False, False, True]


# ---- tiny model and rollouts made by hand


def tiny_model(seed=0):
    cfg = Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                      max_position_embeddings=128, rope_theta=10000.0)
    return Qwen3(cfg).init_weights(seed=seed)


def seq_logprobs(model, r):
    ids = torch.tensor([r['prompt_ids'] + r['tokens']])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0, :-1].double() / LOSS['temperature'], -1)
    P = len(r['prompt_ids'])
    return [logp[P - 1 + k, t].item() for k, t in enumerate(r['tokens'])]


def make_rollouts(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        P, R = 3 + i % 4, 2 + (i * 3) % 7
        r = {'prompt_ids': torch.randint(1, 50, (P,), generator=g).tolist(),
             'tokens': torch.randint(1, 50, (R,), generator=g).tolist()}
        r['logp_old'] = [x + 0.05 * ((k % 3) - 1) for k, x in enumerate(seq_logprobs(model, r))]  # off-policy a bit
        adv = torch.randn(R, generator=g).tolist()
        r['token_adv'] = adv
        out.append(r)
    return out


def test_token_normalization_gradient_independent_of_micro_batch_split():
    grads = []
    for micro in (1, 3, 16):
        model = tiny_model()
        rollouts = make_rollouts(model, 7, seed=1)
        total = sum(len(r['tokens']) for r in rollouts)
        model.zero_grad()
        for k in range(0, len(rollouts), micro):
            loss, _ = cl.micro_batch_loss(model, model, None, rollouts[k:k + micro], total, 1, 0, 'cpu', **LOSS)
            loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and torch.allclose(grads[0], grads[2], atol=1e-6)


def test_one_step_raises_logprob_of_positive_advantage_rollout():
    model = tiny_model(seed=3)
    good = {'prompt_ids': [1, 2, 3], 'tokens': [7, 8, 9, 10]}
    bad = {'prompt_ids': [1, 2, 4], 'tokens': [11, 12, 13]}
    for r, a in ((good, 1.0), (bad, -1.0)):
        r['logprobs'] = seq_logprobs(model, r)
        r['token_adv'] = [a] * len(r['tokens'])
    before_good, before_bad = sum(seq_logprobs(model, good)), sum(seq_logprobs(model, bad))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    cl.policy_update(model, model, None, opt, [good, bad], 1, 0, 'cpu', mu=1, micro_batch_tokens=64, grad_clip=1.0,
                     **LOSS)
    assert sum(seq_logprobs(model, good)) > before_good + 0.1
    assert sum(seq_logprobs(model, bad)) < before_bad - 0.1


# ---- end-to-end runs of main() on a tiny random checkpoint


@pytest.fixture(scope='module')
def rl_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('chrpo')
    corpus = generate_corpus({'train': 200, 'rl_pool': 8}, seed=5)
    tok = train_tokenizer([r['question'] + ' ' + r['cot'] for r in corpus['train']], vocab_size=400)
    cfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
                      max_position_embeddings=512, rope_theta=10000.0, torch_dtype='float32')
    ckpt = root / 'sft'
    Qwen3(cfg).init_weights(seed=0).save_pretrained(ckpt)
    tok.save(str(ckpt))
    rl = root / 'rl.jsonl'
    rl.write_text(''.join(json.dumps(r) + '\n' for r in corpus['rl_pool']))
    teacher = root / 'teacher.jsonl'
    teacher.write_text(''.join(json.dumps({'id': r['id'], 'g_star': [0.2, 0.4, None][i % 3], 'ref_full_len': 20.0})
                               + '\n' for i, r in enumerate(corpus['rl_pool'])))
    return {'root': root, 'ckpt': str(ckpt), 'rl': str(rl), 'teacher': str(teacher)}


def _args(s, out_dir, **kw):
    args = {'init_from': s['ckpt'], 'rl_path': s['rl'], 'teacher_path': s['teacher'], 'stage': 'train',
            'out_dir': str(out_dir), 'questions_per_step': 4, 'group_size': 3, 'max_new_tokens': 6,
            'learning_rate': 1e-2, 'micro_batch_tokens': 128, **kw}
    return [f'--{k}={v}' for k, v in args.items()]


def _run(cmd, env_extra=None, check=True):
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env_extra or {}))
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    if check and p.returncode != 0:
        raise AssertionError(f'{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
    return p


def test_two_rank_torchrun_step_leaves_identical_weights(rl_setup, tmp_path):
    out = tmp_path / 'ddp'
    _run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
          'tests/chrpo_worker.py', *_args(rl_setup, out, max_iters=2, ckpt_interval=2,
                                          activation_checkpointing=True)])  # DDP over checkpointed blocks
    d0, d1 = (out / 'param_digest.rank0.txt').read_text(), (out / 'param_digest.rank1.txt').read_text()
    assert d0 == d1
    init = Qwen3.from_pretrained(rl_setup['ckpt'])
    assert param_digest(init.state_dict()) != d0  # the step did change the weights
    rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [1, 2] and rows[0]['time_sample_s'] > 0
    # each rank samples its own half of every step's questions; together exactly the step's questions
    ids = [json.loads(l)['id'] for l in open(rl_setup['rl'])]
    per_rank = [[json.loads(l) for l in (out / f'questions.rank{r}.jsonl').read_text().splitlines()] for r in (0, 1)]
    for step in range(2):
        want = [ids[i] for i in tc.step_questions(len(ids), step, 4, tc.seed)]
        assert per_rank[0][step] == want[0::2] and per_rank[1][step] == want[1::2]


def test_kill_and_resume_reaches_same_weights_as_uninterrupted_run(rl_setup, tmp_path):
    full = tmp_path / 'full'
    _run([sys.executable, 'tests/chrpo_worker.py', *_args(rl_setup, full, max_iters=2, ckpt_interval=1)])
    killed = tmp_path / 'killed'
    p = _run([sys.executable, 'tests/chrpo_worker.py', *_args(rl_setup, killed, max_iters=2, ckpt_interval=1)],
             env_extra={'CHRPO_DIE_AFTER_CKPT': '1'}, check=False)
    assert p.returncode == 9
    state = torch.load(killed / 'ckpt' / 'train_state.pt', weights_only=False)
    assert state['step'] == 1
    p = _run([sys.executable, 'tests/chrpo_worker.py', *_args(rl_setup, killed, max_iters=2, ckpt_interval=1,
                                                               resume=True)])
    assert 'resumed at step 1' in p.stdout + p.stderr
    assert (killed / 'param_digest.rank0.txt').read_text() == (full / 'param_digest.rank0.txt').read_text()
    steps = [json.loads(l)['step'] for l in (killed / 'metrics.jsonl').read_text().splitlines()]
    assert steps == [1, 2]


def test_group_std_floor_keeps_small_shaping_differences_small():
    # all correct, R_main differing by 0.02: without a floor these become +-1 advantages
    shaped = [1.02, 1.0, 1.02, 1.0]
    assert tc.group_advantages(shaped) == pytest.approx([1, -1, 1, -1], abs=1e-4)
    assert tc.group_advantages(shaped, std_floor=0.25) == pytest.approx([0.04, -0.04, 0.04, -0.04], abs=1e-4)
    # a right-vs-wrong group (std 0.5) is above the floor: unchanged
    assert tc.group_advantages([1.0, 0.0, 0.0, 1.0], std_floor=0.25) == pytest.approx([1, -1, -1, 1], abs=1e-5)
