"""
Stage 3: CHRPO (Constrained and Hierarchical Ratio Policy Optimization). Teaches the SFT
model to choose its own reasoning budget (POLICY mode, prompt ends with <COMP_AUTO>) and
to stay correct under it. The paper's authors did not release their RL trainer; this is
our reconstruction, documented here and in rewards.py.

    python train_chrpo.py config/tiny_chrpo.py                       # one process (CPU)
    torchrun --standalone --nproc_per_node=8 train_chrpo.py config/qwen3_1p7b_chrpo.py
    python train_chrpo.py config/tiny_chrpo.py --stage=teacher       # teacher budgets only

Two phases:
1. Teacher budgets (cached to `teacher_path`, resumable). The SFT model answers each RL
   question at every fixed budget <COMP_20> .. <COMP_100>, `teacher_samples` samples each.
   A budget "solves" a question when at least `teacher_solve_share` of its samples are
   correct. g* = the smallest budget that solves it while every larger budget solves it
   too; a question solved at no budget is kept as an all-fail item (g* = None).
   ref_full_len L = mean think tokens of the closed 1.0 answers (the realized ratio's
   denominator; when the 1.0 answers never closed their think, the longest closed think at
   any budget, and failing that max_new_tokens). train_compressor.py's build step reads g*
   from these rows to make the POLICY warm-up items (<COMP_AUTO> answered at g*).
2. The loop. Each step every rank takes its own `questions_per_step / world` questions and
   samples G = `group_size` rollouts each in POLICY mode, keeping the sampling log-probs.
   Per rollout (rewards.py): chosen budget c (first generated token), realized ratio
   r = think_tokens / L, correct, valid -> R_main and R_ctrl. Advantages are normalized
   within each group, separately for the two rewards:
       A_main_i = (R_main_i - mean_g R_main) / (max(std_g R_main, adv_std_floor) + 1e-6)  (0 if std_g = 0)
       A_ctrl_i = (R_ctrl_i - mean_g R_ctrl) / (max(std_g R_ctrl, adv_std_floor) + 1e-6)
   Placement: A_ctrl goes to the control token (response token 0) only, A_main to every
   other response token. Without R_ctrl (ablation `use_ctrl_reward=False`) the control
   token gets A_main like the rest.
   Groups where both rewards are equal for all G rollouts carry no signal: they are dropped
   from the batch (not just zero-weighted, so their tokens do not dilute the token-level
   normalization) and counted in `skipped_groups`.
   Loss per response token t of rollout i, rho = exp(logp_new - logp_sample):
       l_t = -min(rho * A_t, clip(rho, 1 - eps_low, 1 + eps_high) * A_t)  [+ kl_coef * k3_t]
       k3_t = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1     (off by default)
       loss = sum over the global mini-batch of l_t / (its all-reduced token count)
   The rollout batch is split into `mu` mini-batches, one optimizer step each; each
   mini-batch is run in micro-batches of `micro_batch_size` rollouts with gradient
   accumulation. Because every micro-batch divides by the *global* token count of its
   mini-batch, the gradient does not depend on how rollouts are split into micro-batches
   or across ranks. Log-probs come from kernels.py fused with the LM head, at the sampling
   temperature (rollouts use top_p = 1 so the behaviour distribution is exactly the
   tempered softmax the loss sees).
"""
import copy
import os
import time
from collections import Counter
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import rewards
from common import (all_reduce_sum, append_jsonl, barrier, cleanup_dist, find_checkpoint, load_train_state, print0,
                    read_jsonl, read_jsonl_tolerant, rng_state, save_checkpoint, seed_everything, set_rng_state,
                    setup_dist)
from tokenizer import load_tokenizer
from evaluate import sample_and_grade
from kernels import fused_linear_token_logprobs
from model import Qwen3

# -----------------------------------------------------------------------------
# config (defaults = the tiny embedded run; paper scale in config/qwen3_1p7b_chrpo.py)
out_dir = 'out/chrpo'              # checkpoints, metrics.jsonl, teacher budgets
init_from = 'out/sft/ckpt'         # the SFT model (HF folder or hub id)
tokenizer_path = ''                # '' = the tokenizer files in init_from
rl_path = 'out/data/rl_pool.jsonl' # RL questions: {id, question, answer, ...}
teacher_path = ''                  # '' = {out_dir}/teacher_budgets.jsonl
stage = 'all'                      # 'teacher' | 'train' | 'all'
max_rl_questions = 0               # 0 = all questions of rl_path
# teacher budgets
teacher_samples = 2                # k samples per (question, budget)
teacher_solve_share = 0.5          # a budget solves a question when >= this share is correct
teacher_temperature = 0.7          # decoding for the teacher pass
teacher_top_p = 0.9                # nucleus for the teacher pass
teacher_chunk = 64                 # questions per appended chunk (resume granularity)
# rollouts
max_iters = 30                     # RL steps (rollout batches)
questions_per_step = 16            # global, split over ranks
group_size = 8                     # G rollouts per question
max_new_tokens = 384               # rollout length cap (truncated = invalid)
temperature = 1.0                  # rollout temperature (also used in the loss)
top_p = 1.0                        # keep 1.0: the loss assumes the tempered softmax
sample_batch_size = 0              # rows decoded at once (0 = all)
cuda_graph = True                  # rollouts and teacher labels: CUDA-graph decode on CUDA (no effect on CPU)
# optimization
learning_rate = 2e-5               # AdamW lr (constant after warmup)
warmup_iters = 0                   # linear warmup steps
weight_decay = 0.0                 # AdamW decoupled decay (on every parameter)
grad_clip = 1.0                    # max global grad norm per optimizer step
mu = 2                             # mini-batch updates per rollout batch
micro_batch_size = 16              # rollouts per forward/backward
eps_low = 0.2                      # clip range below 1
eps_high = 0.28                    # clip range above 1 (clip-higher, DAPO)
kl_coef = 0.0                      # k3 KL to the frozen initial model; 0 = off (no reference kept)
# rewards (rewards.py DEFAULTS are used for anything not in reward_overrides)
reward_overrides = {}              # e.g. {'kappa': 0.3, 'lambda_under': 0.8}
use_ctrl_reward = True             # False = the "without R_ctrl" ablation
use_mode_term = True               # False = the "without R_mode" ablation
skip_uniform_groups = True         # drop groups whose rewards are all equal
adv_std_floor = 0.25               # group std is floored here before dividing (see group_advantages)
# run
seed = 1337                        # sampling seeds and the question order
ckpt_interval = 10                 # steps between checkpoints
resume = False                     # continue from {out_dir}/ckpt
param_dtype = 'auto'               # weights (no autocast): 'auto' = bfloat16 on CUDA, float32 on CPU
log_interval = 1                   # steps between printed lines (metrics.jsonl gets every step)

BUDGET_VALUES = [0.2, 0.4, 0.6, 0.8, 1.0]


# -----------------------------------------------------------------------------
# teacher budgets


def teacher_budget(solved):
    """solved: {budget: bool} over BUDGET_VALUES. g* = smallest budget that solves the
    question while every larger budget solves it too; None when 1.0 does not solve it."""
    g_star = None
    for b in sorted(solved, reverse=True):  # walk down from 1.0 while the suffix stays solved
        if not solved[b]:
            break
        g_star = b
    return g_star


def teacher_row(item, rows_by_budget, solve_share):
    """Summarize one question's teacher samples into its cached row."""
    solved, acc = {}, {}
    for b, rows in rows_by_budget.items():
        share = sum(r['correct'] for r in rows) / max(1, len(rows))
        acc[f'{b:.1f}'] = share
        solved[b] = share >= solve_share
    full = [r['think_tokens'] for r in rows_by_budget.get(1.0, []) if r['think_tokens'] is not None]
    any_closed = [r['think_tokens'] for rows in rows_by_budget.values() for r in rows if r['think_tokens'] is not None]
    ref_full_len = sum(full) / len(full) if full else (max(any_closed) if any_closed else None)
    return {'id': item['id'], 'question': item['question'], 'answer': item['answer'],
            'difficulty': item.get('difficulty'), 'g_star': teacher_budget(solved), 'accuracy': acc,
            'ref_full_len': ref_full_len}


def compute_teacher_budgets(model, tok, items, path, rank, world, *, teacher_samples, teacher_solve_share,
                            teacher_temperature, teacher_top_p, teacher_chunk, max_new_tokens, seed, batch_size,
                            cuda_graph=False):
    """Label every item (resumable: rows already in `path` are kept, the rest appended in
    chunks of teacher_chunk). Each rank samples its strided share of a chunk, teacher_samples
    per (question, budget); rank 0 appends the rows. batch_size: rows decoded at once (None = all)."""
    done = {r['id'] for r in read_jsonl_tolerant(path)} if rank == 0 else set()
    if world > 1:
        obj = [done]
        dist.broadcast_object_list(obj, src=0)
        done = obj[0]
    todo = [it for it in items if it['id'] not in done]
    print0(f'teacher budgets: {len(done)} cached, {len(todo)} to label -> {path}')
    t0 = time.time()
    for c0 in range(0, len(todo), teacher_chunk):
        chunk = todo[c0:c0 + teacher_chunk]
        mine = chunk[rank::world]
        rows = []
        per_budget = {}
        for b in BUDGET_VALUES:
            per_budget[b] = sample_and_grade(model, tok, mine, f'{b:.1f}', n=teacher_samples,
                                             temperature=teacher_temperature, top_p=teacher_top_p,
                                             max_new_tokens=max_new_tokens, seed=seed + 7919 * (c0 + 1) + rank + int(b * 10),
                                             batch_size=batch_size, cuda_graph=cuda_graph)
        for qi, item in enumerate(mine):
            by_b = {b: per_budget[b][qi * teacher_samples:(qi + 1) * teacher_samples] for b in BUDGET_VALUES}
            rows.append(teacher_row(item, by_b, teacher_solve_share))
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if rank == 0:
            for r in rows:
                append_jsonl(path, r)
        print0(f'  labelled {min(c0 + teacher_chunk, len(todo))}/{len(todo)} ({time.time() - t0:.0f}s)')
    barrier()
    rows = read_jsonl_tolerant(path)
    hist = Counter('fail' if r['g_star'] is None else f"{r['g_star']:.1f}" for r in rows)
    print0('teacher budget histogram: ' + ', '.join(f'{k}: {hist[k]}' for k in ['0.2', '0.4', '0.6', '0.8', '1.0', 'fail']))
    return rows


def load_teacher(path, items, max_new_tokens):
    """{id: teacher row} for the RL items; every item must have one."""
    teacher = {r['id']: r for r in read_jsonl_tolerant(path)}
    missing = [it['id'] for it in items if it['id'] not in teacher]
    if missing:
        raise SystemExit(f'{path}: no teacher budget for {len(missing)} RL questions (e.g. {missing[0]!r}); '
                         f'run with --stage=teacher first')
    no_ref = sum(1 for it in items if not teacher[it['id']].get('ref_full_len'))
    if no_ref:  # the SFT model never closed its think on these: r = n / max_new_tokens (documented)
        print0(f'{no_ref} RL questions have no ref_full_len (no closed think in the teacher pass): '
               f'their realized ratio uses max_new_tokens={max_new_tokens} as denominator')
    return teacher


# -----------------------------------------------------------------------------
# rewards and advantages


def rollout_reward(sample, teacher, max_new_tokens, reward_overrides, use_mode_term):
    """R_main and R_ctrl of one graded rollout (a sample_and_grade row) given the question's
    teacher row. reward_overrides: rewards.py constants to change; max_new_tokens: the ratio's
    denominator when the teacher has no ref_full_len. Returns (r_main, r_ctrl, info)."""
    c = float(sample['budget']) if sample['budget'] is not None else None
    L = teacher.get('ref_full_len') or max_new_tokens  # no closed 1.0 answer: the length cap
    n = sample['think_tokens']
    r = n / L if (n is not None and L) else None
    valid, _ = rewards.check_integrity(sample['parsed'], sample['finish_reason'], sample['tokens'])
    cfg = dict(reward_overrides)
    cfg['use_mode_term'] = use_mode_term
    rm, rc = rewards.rollout_rewards(sample['correct'], valid, c, r, teacher.get('g_star'), **cfg)
    return rm, rc, {'valid': valid, 'c': c, 'r': r}


def group_advantages(rewards_in_group, std_floor=0.0):
    """(R - mean) / (max(std, std_floor) + 1e-6) within one group (population std); all-equal
    -> zeros. Why the floor: in a group where every rollout is correct, R_main differs only by
    the small shaping terms (a few hundredths); dividing by that tiny std would turn them into
    unit-size advantages on every think token, the same push a right-vs-wrong gap gets. With the
    floor such a group moves the policy in proportion to what is actually at stake."""
    t = torch.tensor(rewards_in_group, dtype=torch.float64)
    std = t.std(unbiased=False)
    if std < 1e-8:
        return [0.0] * len(rewards_in_group)
    return ((t - t.mean()) / (max(float(std), std_floor) + 1e-6)).tolist()


def token_advantages(n_tokens, a_main, a_ctrl, use_ctrl=True):
    """Per-token advantages of one response: the control token (index 0) gets A_ctrl only,
    every other token A_main. Without R_ctrl every token gets A_main."""
    adv = [a_main] * n_tokens
    if n_tokens and use_ctrl:
        adv[0] = a_ctrl
    return adv


def score_groups(samples, items, teacher, group_size, reward_kw, adv_std_floor, use_ctrl_reward,
                 skip_uniform_groups):
    """Rewards and group-normalized advantages of one step's rollouts (samples: group_size rows
    per item, in item order). reward_kw goes to rollout_reward. Returns (rollouts to train on,
    each with 'token_adv'; number of skipped groups; Counter of reward/length sums; Counter
    of chosen budgets)."""
    rollouts, skipped = [], 0
    stats = Counter()
    budget_hist = Counter()
    for qi, item in enumerate(items):
        group = samples[qi * group_size:(qi + 1) * group_size]
        rs = [rollout_reward(s, teacher[item['id']], **reward_kw) for s in group]
        r_main = [x[0] for x in rs]
        r_ctrl = [x[1] for x in rs]
        for s, (rm, rc, info) in zip(group, rs):
            stats['n'] += 1
            stats['r_main'] += rm
            stats['r_ctrl'] += rc
            stats['correct'] += s['correct']
            stats['valid'] += info['valid']
            stats['gen_tokens'] += len(s['tokens'])
            budget_hist[s['budget'] or 'none'] += 1
            if s['think_tokens'] is not None:
                stats['think_n'] += 1
                stats['think_tokens'] += s['think_tokens']
            if info['r'] is not None:
                stats['ratio_n'] += 1
                stats['ratio'] += info['r']
        a_main = group_advantages(r_main, adv_std_floor)
        a_ctrl = group_advantages(r_ctrl, adv_std_floor) if use_ctrl_reward else [0.0] * len(group)
        if skip_uniform_groups and not any(a_main) and not any(a_ctrl):
            skipped += 1
            continue
        for s, am, ac in zip(group, a_main, a_ctrl):
            if not s['tokens']:
                continue
            s['token_adv'] = token_advantages(len(s['tokens']), am, ac, use_ctrl_reward)
            rollouts.append(s)
    return rollouts, skipped, stats, budget_hist


# -----------------------------------------------------------------------------
# the loss


def clipped_surrogate(logp_new, logp_old, adv, eps_lo, eps_hi):
    """Per-token -min(rho A, clip(rho, 1-eps_lo, 1+eps_hi) A), rho = exp(logp_new - logp_old).
    Returns (loss_per_token, clipped_mask)."""
    rho = torch.exp(logp_new - logp_old)
    unclipped = rho * adv
    clipped = rho.clamp(1 - eps_lo, 1 + eps_hi) * adv
    loss = -torch.minimum(unclipped, clipped)
    clipped_mask = ((adv > 0) & (rho > 1 + eps_hi)) | ((adv < 0) & (rho < 1 - eps_lo))
    return loss, clipped_mask


def pack_rollouts(rollouts, pad_id, device):
    """Right-pad prompt+response sequences. Returns input ids [B, T] (the last response token
    is never an input), targets [B, T] (response tokens at the positions that predict them,
    -100 elsewhere), and old log-probs / advantages aligned with targets."""
    seqs = [r['prompt_ids'] + r['tokens'] for r in rollouts]
    T = max(len(s) for s in seqs) - 1
    B = len(rollouts)
    x = torch.full((B, T), pad_id, dtype=torch.long)
    y = torch.full((B, T), -100, dtype=torch.long)
    old = torch.zeros(B, T, dtype=torch.float32)
    adv = torch.zeros(B, T, dtype=torch.float32)
    for b, (r, s) in enumerate(zip(rollouts, seqs)):
        P, R = len(r['prompt_ids']), len(r['tokens'])
        x[b, :len(s) - 1] = torch.tensor(s[:-1])
        # the token at sequence index P + k (response token k) is predicted at position P + k - 1
        y[b, P - 1:P - 1 + R] = torch.tensor(r['tokens'])
        old[b, P - 1:P - 1 + R] = torch.tensor(r['logprobs'], dtype=torch.float32)
        adv[b, P - 1:P - 1 + R] = torch.tensor(r['token_adv'], dtype=torch.float32)
    return x.to(device), y.to(device), old.to(device), adv.to(device)


def micro_batch_loss(ddp_model, raw_model, ref_model, rollouts, global_tokens, world, pad_id, device, *,
                     temperature, eps_low, eps_high, kl_coef):
    """Loss of one micro-batch, already divided by the mini-batch's global token count (and
    multiplied by world size, because DDP averages gradients over ranks). Log-probs at the
    sampling `temperature`; the k3 KL to ref_model (None = off) weighs kl_coef. Returns
    (loss, stats dict of sums)."""
    x, y, old, adv = pack_rollouts(rollouts, pad_id, device)
    hidden = ddp_model(x, return_hidden=True)
    flat_y = y.flatten()
    logp, entropy = fused_linear_token_logprobs(hidden.flatten(0, 1), raw_model.lm_head.weight, flat_y,
                                                temperature=temperature, return_entropy=True)
    mask = flat_y != -100
    loss_tok, clipped = clipped_surrogate(logp, old.flatten(), adv.flatten(), eps_low, eps_high)
    kl_tok = torch.zeros_like(logp)
    if ref_model is not None:
        with torch.no_grad():
            ref_hidden = ref_model(x, return_hidden=True)
            ref_logp = fused_linear_token_logprobs(ref_hidden.flatten(0, 1), ref_model.lm_head.weight, flat_y,
                                                   temperature=temperature)
        d = ref_logp - logp
        kl_tok = torch.exp(d) - d - 1  # k3 estimator of KL(new || ref), >= 0
        loss_tok = loss_tok + kl_coef * kl_tok
    loss = (loss_tok * mask).sum() / global_tokens * world
    m = mask.float()
    stats = {'tokens': m.sum().item(), 'clipped': (clipped.float() * m).sum().item(),
             'entropy': (entropy.detach() * m).sum().item(), 'kl_ref': (kl_tok.detach() * m).sum().item(),
             'approx_kl': ((old.flatten() - logp.detach()) * m).sum().item()}
    return loss, stats


def policy_update(ddp_model, model, ref_model, optimizer, rollouts, world, pad_id, device, *, mu, micro_batch_size,
                  grad_clip, temperature, eps_low, eps_high, kl_coef):
    """mu optimizer steps on this rank's rollouts (each with 'prompt_ids', 'tokens',
    'logprobs', 'token_adv'), each mini-batch in micro-batches of micro_batch_size rollouts,
    grad norm clipped to grad_clip (the loss terms: micro_batch_loss). Every rank must call
    it, even with no rollouts: an empty micro-batch runs a zero-loss pass so DDP's gradient
    all-reduce stays in step.
    Returns summed stats (tokens, clipped, entropy, kl_ref, approx_kl, grad_norm)."""
    stats = Counter()
    model.train()
    perm = torch.randperm(len(rollouts)).tolist()
    rollouts = [rollouts[i] for i in perm]
    for mb in [rollouts[k::mu] for k in range(mu)]:
        global_tokens = max(1.0, all_reduce_sum([sum(len(r['tokens']) for r in mb)], device)[0])
        micro = [mb[k:k + micro_batch_size] for k in range(0, len(mb), micro_batch_size)] or [None]
        for k, mbatch in enumerate(micro):
            last = k == len(micro) - 1
            # accumulate locally, all-reduce once per mini-batch (on its last micro-batch)
            with ddp_model.no_sync() if (world > 1 and not last) else nullcontext():
                if mbatch is None:
                    h = ddp_model(torch.full((1, 1), pad_id, device=device), return_hidden=True)
                    loss, st = h.sum() * 0.0 + model.lm_head.weight.sum() * 0.0, {}
                else:
                    loss, st = micro_batch_loss(ddp_model, model, ref_model, mbatch, global_tokens, world, pad_id,
                                                device, temperature=temperature, eps_low=eps_low, eps_high=eps_high,
                                                kl_coef=kl_coef)
                loss.backward()
            for key, v in st.items():
                stats['loss_' + key] += v
        stats['grad_norm'] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return stats


# -----------------------------------------------------------------------------
# question schedule


def step_questions(n_items, step, per_step, run_seed):
    """Indices of the `per_step` questions of a step: epochs of seeded permutations,
    so step s always takes the same questions (resume replays exactly)."""
    out = []
    start = step * per_step
    for k in range(start, start + per_step):
        epoch, pos = divmod(k, n_items)
        g = torch.Generator().manual_seed(run_seed * 1000003 + epoch)
        out.append(torch.randperm(n_items, generator=g)[pos].item())
    return out


# -----------------------------------------------------------------------------
# loading, metrics, checkpoints


def load_policy(source, tokenizer_path, torch_dtype, device):
    """The SFT (or resumed) model and its tokenizer, which must carry the budget tokens."""
    print0(f'loading {source}')
    model = Qwen3.from_pretrained(source, dtype=torch_dtype, device=device)
    tok = load_tokenizer(tokenizer_path or source)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f'{source}: tokenizer has {tok.vocab_size} tokens but the model only '
                         f'{model.config.vocab_size}; run SFT with the budget tokens first')
    for m in ('auto', '0.2', '1.0'):
        if m not in tok.budget_ids:
            raise ValueError(f'{tokenizer_path or source}: tokenizer lacks the budget token for mode {m}')
    return model, tok


def load_rl_items(path, max_questions):
    """RL questions ({id, question, answer, ...}); the first max_questions (0 = all)."""
    items = read_jsonl(path)
    for i, it in enumerate(items):
        for k in ('id', 'question', 'answer'):
            if k not in it:
                raise KeyError(f'{path}:{i + 1}: record has no {k!r}')
    return items[:max_questions] if max_questions else items


def resume_state(ckpt, optimizer, rank):
    """Optimizer, step and this rank's RNG state from ckpt's train_state; returns the step."""
    state = load_train_state(ckpt)
    optimizer.load_state_dict(state['optimizer'])
    set_rng_state(state['rng'][rank] if isinstance(state['rng'], list) else state['rng'])
    print0(f"resumed at step {state['step']}")
    return state['step']


METRIC_KEYS = ['n', 'r_main', 'r_ctrl', 'correct', 'valid', 'gen_tokens', 'think_n', 'think_tokens', 'ratio_n',
               'ratio', 'loss_tokens', 'loss_clipped', 'loss_entropy', 'loss_kl_ref', 'loss_approx_kl']
HIST_KEYS = ['0.2', '0.4', '0.6', '0.8', '1.0', 'none']


def step_metrics(step, lr, stats, budget_hist, skipped, t_sample, t_train, world, mu, device):
    """One metrics.jsonl row: the step's sums over all ranks (an all-reduce: every rank calls
    it) turned into means; times are averaged over ranks; grad_norm is this rank's mean over
    the mu optimizer steps."""
    tot = all_reduce_sum([stats[k] for k in METRIC_KEYS] + [budget_hist[k] for k in HIST_KEYS]
                         + [skipped, t_sample, t_train], device)
    S = dict(zip(METRIC_KEYS, tot[:len(METRIC_KEYS)]))
    H = dict(zip(HIST_KEYS, tot[len(METRIC_KEYS):len(METRIC_KEYS) + len(HIST_KEYS)]))
    n_skipped, ts, tt = tot[-3], tot[-2] / world, tot[-1] / world

    def div(a, b):
        return a / b if b else None
    return {'step': step, 'lr': lr, 'reward_main': div(S['r_main'], S['n']), 'reward_ctrl': div(S['r_ctrl'], S['n']),
            'accuracy': div(S['correct'], S['n']), 'valid': div(S['valid'], S['n']),
            'think_tokens': div(S['think_tokens'], S['think_n']), 'realized_ratio': div(S['ratio'], S['ratio_n']),
            'budget_hist': {k: H[k] / S['n'] for k in HIST_KEYS if S['n']},
            'clip_frac': div(S['loss_clipped'], S['loss_tokens']), 'entropy': div(S['loss_entropy'], S['loss_tokens']),
            'kl_ref': div(S['loss_kl_ref'], S['loss_tokens']), 'approx_kl': div(S['loss_approx_kl'], S['loss_tokens']),
            'skipped_groups': n_skipped, 'gen_tokens_per_s': div(S['gen_tokens'], ts),
            'time_sample_s': ts, 'time_train_s': tt, 'grad_norm': stats['grad_norm'] / mu}


def log_line(row):
    hist = ' '.join(f"{k}:{v:.2f}" for k, v in row['budget_hist'].items() if v)
    return (f"step {row['step']}: acc {row['accuracy']:.3f} R_main {row['reward_main']:.3f} "
            f"R_ctrl {row['reward_ctrl']:.3f} think {row['think_tokens'] or 0:.0f} "
            f"ratio {row['realized_ratio'] or 0:.2f} | {hist} | clip {row['clip_frac'] or 0:.3f} "
            f"ent {row['entropy'] or 0:.2f} skip {row['skipped_groups']:.0f} | "
            f"sample {row['time_sample_s']:.1f}s train {row['time_train_s']:.1f}s")


def save_rl_checkpoint(out_dir, model, tok, optimizer, step, config, rank, world):
    """Every rank calls it: rank 0 writes the weights, optimizer and step with every rank's
    RNG state (each rank samples from its own stream, so resume needs all of them)."""
    rngs = [None] * world
    if world > 1:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    if rank == 0:
        save_checkpoint(out_dir, model, tok, {'optimizer': optimizer.state_dict(), 'step': step, 'rng': rngs,
                                              'config': config})
    barrier()


# -----------------------------------------------------------------------------
# main


def main():
    rank, world, _, device = setup_dist()
    seed_everything(seed + rank)
    os.makedirs(out_dir, exist_ok=True)
    torch_dtype = ((torch.bfloat16 if device.type == 'cuda' else torch.float32) if param_dtype == 'auto'
                   else getattr(torch, param_dtype))
    t_path = teacher_path or os.path.join(out_dir, 'teacher_budgets.jsonl')
    config = {k: v for k, v in globals().items()
              if not k.startswith('_') and k.islower() and isinstance(v, (int, float, str, bool, dict, list))}

    # ---- model, tokenizer, RL questions (resume beats init_from)
    ckpt = find_checkpoint(out_dir) if resume else None
    model, tok = load_policy(ckpt or init_from, tokenizer_path, torch_dtype, device)
    items = load_rl_items(rl_path, max_rl_questions)

    # ---- phase 1: teacher budgets (from the initial SFT model; skipped when cached and complete)
    if stage in ('teacher', 'all'):
        teacher_model = model if ckpt is None else Qwen3.from_pretrained(init_from, dtype=torch_dtype, device=device)
        compute_teacher_budgets(teacher_model, tok, items, t_path, rank, world, teacher_samples=teacher_samples,
                                teacher_solve_share=teacher_solve_share, teacher_temperature=teacher_temperature,
                                teacher_top_p=teacher_top_p, teacher_chunk=teacher_chunk,
                                max_new_tokens=max_new_tokens, seed=seed, batch_size=sample_batch_size or None,
                                cuda_graph=cuda_graph)
        del teacher_model
        if stage == 'teacher':
            cleanup_dist()
            return
    teacher = load_teacher(t_path, items, max_new_tokens)

    # ---- phase 2: CHRPO
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if kl_coef > 0 else None
    ddp_model = DDP(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95),
                                  weight_decay=weight_decay, fused=device.type == 'cuda')
    step = resume_state(ckpt, optimizer, rank) if ckpt else 0
    if world > 1 and questions_per_step % world:
        raise SystemExit(f'questions_per_step ({questions_per_step}) must be a multiple of the world size ({world})')
    reward_kw = dict(max_new_tokens=max_new_tokens, reward_overrides=reward_overrides, use_mode_term=use_mode_term)
    update_kw = dict(mu=mu, micro_batch_size=micro_batch_size, grad_clip=grad_clip, temperature=temperature,
                     eps_low=eps_low, eps_high=eps_high, kl_coef=kl_coef)
    bar = tqdm(total=max_iters, initial=step, disable=rank != 0, desc='chrpo')
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    while step < max_iters:
        lr = learning_rate * min(1.0, (step + 1) / warmup_iters) if warmup_iters else learning_rate
        for g in optimizer.param_groups:
            g['lr'] = lr
        # ---- rollouts: this rank's share of the step's questions, G samples each
        t0 = time.time()
        idx = step_questions(len(items), step, questions_per_step, seed)[rank::world]
        my_items = [items[i] for i in idx]
        samples = sample_and_grade(model, tok, my_items, 'auto', n=group_size, temperature=temperature,
                                   top_p=top_p, max_new_tokens=max_new_tokens,
                                   seed=seed * 7 + step * world + rank, batch_size=sample_batch_size or None,
                                   cuda_graph=cuda_graph)
        t_sample = time.time() - t0
        # ---- rewards and group-normalized advantages (uniform groups dropped)
        t1 = time.time()
        rollouts, skipped, stats, budget_hist = score_groups(samples, my_items, teacher, group_size, reward_kw,
                                                             adv_std_floor, use_ctrl_reward, skip_uniform_groups)
        # ---- mu mini-batch updates, micro-batched, token-normalized over the global mini-batch
        stats.update(policy_update(ddp_model, model, ref_model, optimizer, rollouts, world, tok.pad_id, device,
                                   **update_kw))
        t_train = time.time() - t1
        step += 1
        bar.update(1)

        row = step_metrics(step, lr, stats, budget_hist, skipped, t_sample, t_train, world, mu, device)
        if rank == 0:
            append_jsonl(metrics_path, row)
            if step % log_interval == 0:
                bar.write(log_line(row))
        if step % ckpt_interval == 0 or step == max_iters:
            save_rl_checkpoint(out_dir, model, tok, optimizer, step, config, rank, world)
    bar.close()
    cleanup_dist()
    return model


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
