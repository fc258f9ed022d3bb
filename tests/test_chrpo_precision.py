"""CHRPO at paper scale, checked on CPU (train_chrpo.py, chrpo_loss.py; issue 12): fp32 master weights and AdamW
state under bf16 autocast (a 1e-6 step moves an RMSNorm gain), exact resume from them; logp_old
from the training forward (rho = 1 on the first mini-batch, whatever the sampler said);
micro-batches capped by tokens and activation checkpointing leave the gradient unchanged; the
effective batch does not depend on the world size; the memory plan refuses an over-budget run
without touching its files; a checkpoint whose budget tokens sit in untrained rows is refused.

    python -m pytest tests/test_chrpo_precision.py -q
"""
import hashlib
import json
import os

import pytest
import torch
from safetensors import safe_open

import chrpo_loss as cl
import memplan
import train_chrpo as tc
from common import find_checkpoint, load_train_state
from corpus import generate_corpus
from digest import folder_digest
from model import Qwen3, Qwen3Config
from optim import make_autocast
from qwen_like import qwen_like_checkpoint
from tokenizer import train_tokenizer

LOSS = dict(temperature=0.8, eps_low=0.2, eps_high=0.28, kl_coef=0.0)


def tiny_model(vocab=60, seed=0):
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
                      max_position_embeddings=512, rope_theta=10000.0, torch_dtype='float32')
    return Qwen3(cfg).init_weights(seed=seed)


def random_rollouts(n, seed, vocab=60):
    """Rollouts of varied lengths with advantages and *wrong* sampler log-probs (-1 everywhere):
    the update must not use them for rho."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        P, R = 3 + i % 5, 2 + (i * 7) % 13
        out.append({'prompt_ids': torch.randint(1, vocab, (P,), generator=g).tolist(),
                    'tokens': torch.randint(1, vocab, (R,), generator=g).tolist(), 'logprobs': [-1.0] * R,
                    'token_adv': torch.randn(R, generator=g).tolist()})
    return out


class GradSpy:
    """An optimizer stand-in: records the gradients at each step, changes nothing."""

    def __init__(self, model):
        self.model, self.grads = model, []

    def step(self):
        self.grads.append(torch.cat([p.grad.flatten().clone() for p in self.model.parameters()]))

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def one_update_gradient(micro_batch_tokens, checkpointing=False, monkeypatch=None):
    """The gradient of one CHRPO update (mu = 1) of a fresh tiny model, and the micro-batch count."""
    model = tiny_model().set_activation_checkpointing(checkpointing)
    spy, calls = GradSpy(model), []
    real = cl.micro_batch_loss
    monkeypatch.setattr(cl, 'micro_batch_loss', lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)  # the rollout shuffle
    cl.policy_update(model, model, None, spy, random_rollouts(9, seed=3), 1, 0, 'cpu', mu=1,
                     micro_batch_tokens=micro_batch_tokens, grad_clip=1e9, **LOSS)
    return spy.grads[0], len(calls)

# -----------------------------------------------------------------------------
# finding 2: logp_old is the training forward


@pytest.mark.parametrize('amp', ['float32', 'bfloat16'])
def test_first_mini_batch_is_exactly_on_policy(amp, monkeypatch):
    """The sampler's log-probs (here deliberately off by up to 3 nats) never enter rho: logp_old is the
    training forward (the first mini-batch's own, detached), so at the first mini-batch rho = 1 on every token (clip
    fraction 0, approx-KL 0), under bf16 autocast too. The second mini-batch sees the moved policy."""
    model = tiny_model(seed=1)
    rollouts = random_rollouts(8, seed=5)
    seen, steps = [], []
    real = cl.clipped_surrogate

    def spy(logp_new, logp_old, adv, lo, hi):
        seen.append((len(steps), logp_new.detach().clone(), logp_old.clone(), adv != 0))
        return real(logp_new, logp_old, adv, lo, hi)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    real_step = opt.step
    monkeypatch.setattr(opt, 'step', lambda: steps.append(1) or real_step())
    monkeypatch.setattr(cl, 'clipped_surrogate', spy)
    stats = cl.policy_update(model, model, None, opt, rollouts, 1, 0, 'cpu', mu=2, micro_batch_tokens=40,
                             grad_clip=1.0, autocast=make_autocast('cpu', amp), **LOSS)
    first = [(new, old, m) for k, new, old, m in seen if k == 0]
    second = [(new, old, m) for k, new, old, m in seen if k == 1]
    assert len(first) >= 2 and second  # several micro-batches in the first mini-batch, then a second one
    for new, old, m in first:
        rho = torch.exp(new - old)[m]
        assert rho.numel() > 0 and torch.all((rho - 1).abs() <= 1e-6), (rho - 1).abs().max()
    moved = max(torch.exp(new - old)[m].sub(1).abs().max().item() for new, old, m in second)
    assert moved > 1e-4  # after one AdamW step the same comparison is no longer trivial
    assert stats['logp_gap'] / stats['loss_tokens'] > 0.5  # the sampler's numbers were that far off
    assert all(isinstance(r['logp_old'], torch.Tensor) and len(r['logp_old']) == len(r['tokens']) for r in rollouts)


def test_only_later_mini_batches_pay_a_no_grad_logp_old_pass(monkeypatch):
    """The first mini-batch's logp_old is its own forward (no optimizer step has run), so the no-grad
    pass covers exactly the micro-batches of the later mini-batches, each once, before the first step;
    every micro-batch of every mini-batch then runs once with grad."""
    model = tiny_model(seed=3)
    rollouts = random_rollouts(9, seed=4)
    calls, steps = [], []
    real = cl.token_logprobs

    def spy(model_, head, x, flat_y, *a, **k):
        calls.append((len(steps), torch.is_grad_enabled(), tuple(x.shape)))
        return real(model_, head, x, flat_y, *a, **k)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    real_step = opt.step
    monkeypatch.setattr(opt, 'step', lambda: steps.append(1) or real_step())
    monkeypatch.setattr(cl, 'token_logprobs', spy)
    torch.manual_seed(0)  # policy_update shuffles: recompute its mini-batches from the same permutation
    order = torch.randperm(len(rollouts)).tolist()
    minis = [cl.split_by_tokens([rollouts[i] for i in order][k::3], 40) for k in range(3)]
    torch.manual_seed(0)
    cl.policy_update(model, model, None, opt, rollouts, 1, 0, 'cpu', mu=3, micro_batch_tokens=40, grad_clip=1.0,
                     autocast=make_autocast('cpu', 'float32'), **LOSS)
    no_grad = [shape for k, g, shape in calls if not g]
    with_grad = [shape for k, g, shape in calls if g]
    assert all(k == 0 for k, g, _ in calls if not g)  # all before the first optimizer step
    assert len(no_grad) == len(minis[1]) + len(minis[2]) >= 2
    assert len(with_grad) == sum(len(m) for m in minis)


def test_logp_old_is_in_fp32_even_under_bf16_autocast(monkeypatch):
    """Both sides of the ratio use fp32 logits (compute_dtype), not autocast's bf16 head."""
    model = tiny_model(seed=2)
    rollouts = random_rollouts(3, seed=1)
    x, y = cl.pack_rollouts(rollouts, 0, 'cpu', keys=())
    ref = cl.token_logprobs(model, model.lm_head.weight, x, y.flatten(), 0.8, make_autocast('cpu', 'float32'))
    got = cl.token_logprobs(model, model.lm_head.weight, x, y.flatten(), 0.8, make_autocast('cpu', 'bfloat16'))
    with torch.autocast('cpu', dtype=torch.bfloat16):  # what a bf16 LM head would give
        hidden = model(x, return_hidden=True).flatten(0, 1)
        bf16_head = torch.log_softmax((hidden @ model.lm_head.weight.T).float() / 0.8, -1)
    bf16_head = bf16_head.gather(1, y.flatten().clamp(min=0)[:, None])[:, 0] * (y.flatten() != -100)
    assert got.dtype == torch.float32
    # bf16 blocks, fp32 head: closer to the fp32 forward than a bf16 head gets
    assert (got - ref).abs().max() < 0.5 * (bf16_head - ref).abs().max()

# -----------------------------------------------------------------------------
# findings 6/7: micro-batches by tokens, activation checkpointing


def test_gradient_is_the_same_for_any_micro_batch_token_cap(monkeypatch):
    """Global token normalization: one micro-batch per rollout, a few, or all in one give the same
    gradient (fp32); the cap really changes the split."""
    g_small, n_small = one_update_gradient(8, monkeypatch=monkeypatch)  # every rollout alone
    g_mid, n_mid = one_update_gradient(48, monkeypatch=monkeypatch)
    g_all, n_all = one_update_gradient(10_000, monkeypatch=monkeypatch)
    assert n_small == 9 and 1 < n_mid < 9 and n_all == 1
    assert g_all.abs().sum() > 0
    torch.testing.assert_close(g_small, g_all, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(g_mid, g_all, atol=1e-7, rtol=1e-5)


def test_split_by_tokens_caps_padded_tokens():
    rollouts = random_rollouts(20, seed=9)
    micro = cl.split_by_tokens(rollouts, 40)
    assert sorted(id(r) for mb in micro for r in mb) == sorted(id(r) for r in rollouts)  # each exactly once
    for mb in micro:
        width = max(len(r['prompt_ids']) + len(r['tokens']) - 1 for r in mb)
        assert len(mb) * width <= 40 or len(mb) == 1  # a rollout longer than the cap goes alone
    assert len(cl.split_by_tokens(rollouts, 10)) > len(micro) > len(cl.split_by_tokens(rollouts, 400))


def test_activation_checkpointing_gives_the_same_update_gradient(monkeypatch):
    plain, _ = one_update_gradient(48, checkpointing=False, monkeypatch=monkeypatch)
    ckpt, _ = one_update_gradient(48, checkpointing=True, monkeypatch=monkeypatch)
    torch.testing.assert_close(ckpt, plain, atol=1e-7, rtol=1e-5)

# -----------------------------------------------------------------------------
# the budget choice's entropy bonus (ctrl_entropy_coef)

BUDGET_IDS = torch.tensor([5, 6, 7, 8, 9])  # five token ids standing in for <COMP_20> .. <COMP_100>


def test_control_entropy_is_the_first_response_tokens_entropy_over_the_budget_tokens():
    # reference: full logits from the model's own forward, float64, the budget columns only
    model, rollouts, T = tiny_model(), random_rollouts(6, seed=5), 0.8
    x, y = cl.pack_rollouts(rollouts, 0, 'cpu', keys=())
    _, _, hidden = cl.token_logprobs(model, model.lm_head.weight, x, y.flatten(), T, make_autocast('cpu', 'float32'),
                                     with_entropy=True)
    got = cl.control_entropy(hidden, model.lm_head.weight, y, BUDGET_IDS, T)
    with torch.no_grad():
        logits = model(x).double()
    for b, r in enumerate(rollouts):
        p = torch.softmax(logits[b, len(r['prompt_ids']) - 1, BUDGET_IDS] / T, -1)  # predicts response token 0
        assert abs(got[b].item() - float(-(p * p.log()).sum())) < 1e-5
    assert got.requires_grad
    y[2] = -100  # a row without targets has no control token: entropy 0, not a prompt position's
    assert cl.control_entropy(hidden, model.lm_head.weight, y, BUDGET_IDS, T)[2] == 0


def ctrl_bonus_update(coef, micro_batch_tokens):
    """One plain gradient step (lr 1.0) of a tiny model on rollouts with zero advantages: only the
    bonus can move it. Returns the gradient and the mean control entropy before and after."""
    model, rollouts = tiny_model(), random_rollouts(8, seed=6)
    for r in rollouts:
        r['token_adv'] = [0.0] * len(r['tokens'])
    x, y = cl.pack_rollouts(rollouts, 0, 'cpu', keys=())

    def mean_entropy():
        with torch.no_grad():
            hidden = model(x, return_hidden=True)
            return cl.control_entropy(hidden, model.lm_head.weight, y, BUDGET_IDS, 1.0).mean().item()
    before, spy = mean_entropy(), GradSpy(model)
    torch.manual_seed(0)
    cl.policy_update(model, model, None, spy, rollouts, 1, 0, 'cpu', mu=1, micro_batch_tokens=micro_batch_tokens,
                     grad_clip=1e9, **dict(LOSS, temperature=1.0), ctrl_entropy_coef=coef, budget_ids=BUDGET_IDS)
    with torch.no_grad():
        for p, g in zip(model.parameters(), torch.split(spy.grads[0], [p.numel() for p in model.parameters()])):
            p -= 1.0 * g.view_as(p)
    return spy.grads[0], before, mean_entropy()


def test_ctrl_entropy_bonus_raises_the_budget_choice_entropy_and_nothing_else_moves_without_it():
    grad, before, after = ctrl_bonus_update(0.5, 10_000)
    assert after > before + 1e-4
    split_grad, _, _ = ctrl_bonus_update(0.5, 8)  # one micro-batch per rollout: the same gradient
    torch.testing.assert_close(split_grad, grad, atol=1e-7, rtol=1e-5)
    off, before_off, after_off = ctrl_bonus_update(0.0, 10_000)
    assert off.abs().max() == 0 and after_off == before_off

# -----------------------------------------------------------------------------
# finding 5: the effective batch does not depend on the world size


def test_rollouts_per_update_is_the_same_on_1_and_8_gpus():
    cfg = {}
    exec(open(os.path.join(os.path.dirname(__file__), '..', 'config', 'qwen3_1p7b_chrpo.py')).read(), {}, cfg)
    q, g = cfg['questions_per_step'], cfg['group_size']
    one, eight = (tc.rollouts_per_update(q, g, cfg['mu'], w) for w in (1, 8))
    assert one[1] == eight[1] == q * g // cfg['mu']  # rollouts per optimizer step
    assert one[0] == q and eight[0] * 8 == q  # questions per rank
    with pytest.raises(ValueError, match='questions_per_step / world'):
        tc.rollouts_per_update(60, 8, 2, 8)
    with pytest.raises(ValueError, match='multiple of mu = 3'):
        tc.rollouts_per_update(64, 8, 3, 1)

# -----------------------------------------------------------------------------
# finding 1, the memory plan and budget rows: main() on a tiny checkpoint


@pytest.fixture(scope='module')
def rl_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('chrpo_precision')
    corpus = generate_corpus({'train': 120, 'rl_pool': 4}, seed=5)
    tok = train_tokenizer([r['question'] + ' ' + r['cot'] for r in corpus['train']], vocab_size=300)
    ckpt = root / 'sft'
    tiny_model(vocab=tok.vocab_size).save_pretrained(ckpt)
    tok.save(str(ckpt))
    (root / 'rl.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in corpus['rl_pool']))
    (root / 'teacher.jsonl').write_text(''.join(json.dumps({'id': r['id'], 'g_star': 0.4, 'ref_full_len': 20.0}) + '\n'
                                                for r in corpus['rl_pool']))
    return {'ckpt': str(ckpt), 'rl': str(root / 'rl.jsonl'), 'teacher': str(root / 'teacher.jsonl')}


def fake_reward(sample, teacher, **kw):
    # deterministic in the rollout's tokens: a random tiny model still gets a policy gradient
    h = hashlib.sha256(str(sample['tokens']).encode()).digest()
    return h[0] / 255.0, h[1] / 255.0, {'valid': True, 'c': None, 'r': None}


def run_main(monkeypatch, files, out_dir, **kw):
    """train_chrpo.main() in this process with the tiny files; returns (model, the state dict of the
    model each rollout batch was sampled with)."""
    cfg = dict(init_from=files['ckpt'], tokenizer_path='', rl_path=files['rl'], teacher_path=files['teacher'],
               stage='train', out_dir=str(out_dir), max_iters=1, questions_per_step=4, group_size=2,
               max_new_tokens=6, temperature=1.0, top_p=1.0, mu=1, micro_batch_tokens=64, learning_rate=1e-6,
               warmup_iters=0, kl_coef=0.0, resume=False, ckpt_interval=1, autocast_dtype='bfloat16',
               activation_checkpointing=False, memory_budget_gb=0.0, sample_batch_size=0)
    cfg.update(kw)
    for k, v in cfg.items():
        monkeypatch.setattr(tc, k, v)
    monkeypatch.setattr(tc, 'rollout_reward', fake_reward)
    sampled_with = []
    real = tc.sample_and_grade
    monkeypatch.setattr(tc, 'sample_and_grade', lambda model, *a, **k: sampled_with.append(
        {n: v.clone() for n, v in model.state_dict().items()}) or real(model, *a, **k))
    return tc.main(), sampled_with


def test_bf16_run_keeps_fp32_master_weights_and_adamw_state(rl_files, tmp_path, monkeypatch):
    model, sampled_with = run_main(monkeypatch, rl_files, tmp_path / 'o', activation_checkpointing=True)
    assert len(sampled_with) == 1  # rollouts decode with the bf16 sampling copy
    assert {v.dtype for v in sampled_with[0].values()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.activation_checkpointing  # the config switch reached the model
    state = load_train_state(find_checkpoint(str(tmp_path / 'o')))['optimizer']['state']
    assert state and all(s['exp_avg'].dtype == s['exp_avg_sq'].dtype == torch.float32 for s in state.values())
    # a 1e-6 AdamW step moves an RMSNorm gain off 1.0 (in bf16 it rounds back to 1.0: spacing 2^-7)
    gain = model.model.layers[0].input_layernorm.weight
    assert (gain != 1.0).any() and ((gain - 1.0).abs() < 1e-5).all()
    # the checkpoint holds the master weights themselves, in fp32
    with safe_open(os.path.join(find_checkpoint(str(tmp_path / 'o')), 'model.safetensors'), 'pt') as f:
        for k in f.keys():
            assert f.get_tensor(k).dtype == torch.float32 and torch.equal(f.get_tensor(k), model.state_dict()[k]), k


def test_bf16_resume_reaches_the_uninterrupted_weights(rl_files, tmp_path, monkeypatch):
    """The checkpoint keeps the fp32 master weights; the sampling copy is rebuilt from them and the
    KL reference reloaded from init_from, so a resumed run ends where an uninterrupted one does."""
    kw = dict(learning_rate=1e-3, kl_coef=0.1)
    full, sampled_with = run_main(monkeypatch, rl_files, tmp_path / 'full', max_iters=2, **kw)
    after_one, _ = run_main(monkeypatch, rl_files, tmp_path / 'cut', max_iters=1, **kw)
    resumed, _ = run_main(monkeypatch, rl_files, tmp_path / 'cut', max_iters=2, resume=True, **kw)
    # step 2 sampled with the master weights after step 1, rounded to bf16 (the copy was refreshed)
    for k, v in after_one.state_dict().items():
        assert torch.equal(sampled_with[1][k], v.to(torch.bfloat16)), k
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_over_budget_run_is_refused_and_nothing_written_is_lost(rl_files, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'o'
    run_main(monkeypatch, rl_files, out)  # a finished step: checkpoint, metrics
    before = folder_digest(out)
    with pytest.raises(MemoryError, match=r"train_chrpo: the rollouts phase needs .* the device's 0.0 GiB.*"
                                          r'change sample_batch_size, max_new_tokens'):
        run_main(monkeypatch, rl_files, out, max_iters=3, resume=True, memory_budget_gb=1e-4)
    assert 'memory plan: train_chrpo' in capsys.readouterr().out  # printed before refusing
    assert folder_digest(out) == before


def test_checkpoint_with_budget_tokens_in_untrained_padding_rows_is_refused(tmp_path):
    """Qwen3's case: the tokenizer knows 151,669 ids, the embedding has 151,936 rows, and the
    budget ids land in rows pretraining never used; no row count reveals it, the tokenizer does."""
    ckpt = qwen_like_checkpoint(tmp_path)
    with pytest.raises(ValueError, match='run SFT with the budget tokens first'):
        tc.load_policy(ckpt, '', 'cpu')


def test_memory_plan_counts_the_rows_the_sampler_decodes_at_once():
    assert memplan.prompts_per_decode(8, 8, 64) == 8  # 8 questions x 8 samples in one batch
    assert memplan.prompts_per_decode(64, 8, 64) == 8  # 1 GPU, 64 questions: sample_batch_size caps it
    assert memplan.prompts_per_decode(64, 8, 0) == 64  # 0: everything at once
    assert memplan.prompts_per_decode(16, 4, 10) == 3  # a batch can cut a group
    assert memplan.budget_bytes('cpu') is None and memplan.budget_bytes('cpu', 2.0) == 2 * memplan.GiB
