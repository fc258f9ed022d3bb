"""
Stage 3: CHRPO (Constrained and Hierarchical Ratio Policy Optimization). Teaches the SFT
model to choose its own reasoning budget (POLICY mode, prompt ends with <COMP_AUTO>) and
to stay correct under it. The paper's authors did not release their RL trainer; this is
our reconstruction, documented here and in rewards.py.

    python train_chrpo.py config/tiny_chrpo.py                       # one process (CPU)
    torchrun --standalone --nproc_per_node=8 train_chrpo.py config/qwen3_1p7b_chrpo.py
    python train_chrpo.py config/tiny_chrpo.py --stage=teacher --init_from=out/sft_ratio/ckpt  # teacher budgets only

Two phases:
1. Teacher budgets (cached to `teacher_path`, resumable). The SFT model answers each RL
   question at every fixed budget <COMP_20> .. <COMP_100>, `teacher_samples` samples each.
   A budget "solves" a question when at least `teacher_solve_share` of its samples are
   correct. g* = the smallest budget that solves it while every larger budget solves it
   too; a question solved at no budget is kept as an all-fail item (g* = None).
   ref_full_len L = mean think tokens of the closed 1.0 answers (the realized ratio's
   denominator; when the 1.0 answers never closed their think, the longest closed think at
   any budget, and failing that max_new_tokens). build_sft_data.py reads g* from these
   rows to make the POLICY warm-up items (<COMP_AUTO> answered at g*).
2. The loop. Each step every rank takes its own `questions_per_step / world` questions and
   samples G = `group_size` rollouts each in POLICY mode.
   Per rollout (rewards.py): chosen budget c (first generated token), realized ratio
   r = think_tokens / L, correct, valid -> R_main and R_ctrl. Advantages are normalized
   within each group, separately for the two rewards:
       A_main_i = (R_main_i - mean_g R_main) / (max(std_g R_main, adv_std_floor) + 1e-6)  (0 if std_g = 0)
       A_ctrl_i = (R_ctrl_i - mean_g R_ctrl) / (max(std_g R_ctrl, adv_std_floor) + 1e-6)
   Placement: A_ctrl goes to the control token (response token 0) only, A_main to every
   other response token. Without R_ctrl (ablation `use_ctrl_reward=False`) the control
   token gets A_main like the rest. Either way the control token's advantage is multiplied
   by `ctrl_token_weight`: one token among a rollout's many, the budget choice otherwise
   drifts with the body's updates instead of following its reward (README, Choices).
   Groups where both rewards are equal for all G rollouts carry no signal: they are dropped
   from the batch (not just zero-weighted, so their tokens do not dilute the token-level
   normalization) and counted in `skipped_groups`.
   The update (chrpo_loss.py): a clipped surrogate per response token, rho = exp(logp_new -
   logp_old) with logp_old from the training forward, normalized by the global token count of
   each of `mu` mini-batches (questions_per_step * group_size / mu rollouts an optimizer step,
   on any number of GPUs), run in micro-batches of at most `micro_batch_tokens` padded tokens.

Precision (optim.py): fp32 master weights, gradients and AdamW state (the checkpoint keeps
them: resume is exact); bf16 (`autocast_dtype`) only inside the update's autocast and, unless
`sample_dtype` says otherwise, in the sampling copy rollouts decode with, refreshed after every
update. `compile` compiles the training model's blocks; the sampler keeps its own eager copy.
Memory: memplan.chrpo_plan is printed before anything runs, and the run refused when a phase
does not fit (`memory_budget_gb`).
"""
import copy
import math
import os
import time
from collections import Counter

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import memplan
import rewards
from common import (all_reduce_sum, append_jsonl, barrier, cleanup_dist, epoch_permutation, find_checkpoint,
                    load_train_state, print0, read_jsonl, read_jsonl_tolerant, rng_state, save_checkpoint,
                    seed_everything, set_rng_state, setup_dist, write_jsonl)
from configurator import config_snapshot
from data import BUDGETS, FIXED_MODES, mode_name
from tokenizer import load_tokenizer
from chrpo_loss import policy_update
from evaluate import build_prompts, finished_questions, sample_and_grade, sample_in_chunks
from model import Qwen3, resolve_model_dir, trained_vocab_size
from optim import (DTYPES, adamw, autocast_dtype as resolve_autocast_dtype, lr_at, make_autocast,
                   refresh_sampling_copy, sampling_copy)

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
weight_decay = 0.0                 # AdamW decoupled decay (matrices only)
grad_clip = 1.0                    # max global grad norm per optimizer step
mu = 2                             # mini-batch updates per rollout batch (must divide a rank's rollouts)
micro_batch_tokens = 16384         # padded tokens per forward/backward (a longer rollout goes alone)
eps_low = 0.2                      # clip range below 1
eps_high = 0.28                    # clip range above 1 (clip-higher, DAPO)
kl_coef = 0.0                      # k3 KL to the frozen initial model; 0 = off (no reference kept)
ctrl_entropy_coef = 0.0            # bonus on the budget choice's entropy (control token, over the 5 budget tokens), in
                                   # units of one token's loss: a group only compares budgets its rollouts chose
ctrl_token_weight = 1.0            # the control token's surrogate counts this many tokens (its advantage x this)
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
autocast_dtype = 'auto'            # the update's autocast: 'auto' = bf16 on CUDA, fp32 (off) on CPU
sample_dtype = 'auto'              # the sampling copy's dtype (rollouts, teacher pass); 'auto' = the autocast
                                   # dtype. fp32 beside a bf16 update: rollouts drawn from the fp32 policy exactly
compile = False                    # torch.compile the blocks for the update (model.compile_blocks; dynamic shapes)
activation_checkpointing = False   # recompute each block in backward (much less activation memory)
memory_budget_gb = 0.0             # GiB a device the memory plan must fit; 0 = the CUDA device's (CPU: no check)
log_interval = 1                   # steps between printed lines (metrics.jsonl gets every step)
save_rollouts = False              # also append every rollout's budget, ratio, rewards and advantages to
                                   # {out_dir}/rollouts.jsonl (one row per rollout; for reading what RL rewards)


# -----------------------------------------------------------------------------
# teacher budgets


def teacher_budget(solved):
    """solved: {budget: bool} over data.BUDGETS. g* = smallest budget that solves the
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
        acc[mode_name(b)] = share
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
    chunks of teacher_chunk, evaluate.sample_in_chunks). Each rank samples its strided share of
    a chunk, teacher_samples per (question, budget); rank 0 appends the rows. batch_size: rows
    decoded at once (None = all)."""
    done = set(finished_questions(path, 1)) if rank == 0 else set()
    if world > 1:
        obj = [done]
        dist.broadcast_object_list(obj, src=0)
        done = obj[0]
    todo = [i for i, it in enumerate(items) if str(it['id']) not in done]
    print0(f'teacher budgets: {len(items) - len(todo)} cached, {len(todo)} to label -> {path}')

    def label_chunk(chunk):  # chunk[0]: the index of the chunk's first question seeds it
        mine = [items[i] for i in chunk[rank::world]]
        per_budget = {}
        for b in BUDGETS:
            per_budget[b] = sample_and_grade(model, tok, mine, mode_name(b), n=teacher_samples,
                                             temperature=teacher_temperature, top_p=teacher_top_p,
                                             max_new_tokens=max_new_tokens, batch_size=batch_size, cuda_graph=cuda_graph,
                                             seed=seed + 7919 * (chunk[0] + 1) + rank + int(b * 10))
        rows = []
        for qi, item in enumerate(mine):
            by_b = {b: per_budget[b][qi * teacher_samples:(qi + 1) * teacher_samples] for b in BUDGETS}
            rows.append(teacher_row(item, by_b, teacher_solve_share))
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        return rows
    sample_in_chunks(todo, teacher_chunk, label_chunk, path if rank == 0 else None, 'teacher budgets')
    barrier()
    rows = read_jsonl_tolerant(path)
    hist = Counter('fail' if r['g_star'] is None else mode_name(r['g_star']) for r in rows)
    print0('teacher budget histogram: ' + ', '.join(f'{k}: {hist[k]}' for k in FIXED_MODES + ['fail']))
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


def token_advantages(n_tokens, a_main, a_ctrl, use_ctrl=True, ctrl_weight=1.0):
    """Per-token advantages of one response: the control token (index 0) gets A_ctrl only,
    every other token A_main. Without R_ctrl every token gets A_main. The control token's
    advantage is scaled by ctrl_weight: the surrogate is linear in A (the clip side depends on
    its sign only), so this counts the budget choice as ctrl_weight tokens of the loss."""
    adv = [a_main] * n_tokens
    if n_tokens:
        adv[0] = (a_ctrl if use_ctrl else a_main) * ctrl_weight
    return adv


def score_groups(samples, items, teacher, group_size, reward_kw, adv_std_floor, use_ctrl_reward,
                 skip_uniform_groups, ctrl_token_weight=1.0):
    """Rewards and group-normalized advantages of one step's rollouts (samples: group_size rows
    per item, in item order). reward_kw goes to rollout_reward; the control token's advantage is
    weighted by ctrl_token_weight (token_advantages). Returns (rollouts to train on,
    each with 'token_adv'; number of skipped groups; Counter of reward/length sums; Counter
    of chosen budgets)."""
    rollouts, skipped = [], 0
    stats = Counter()
    budget_hist = Counter()
    for qi, item in enumerate(items):
        group = samples[qi * group_size:(qi + 1) * group_size]
        t_row = teacher[item['id']]
        rs = [rollout_reward(s, t_row, **reward_kw) for s in group]
        r_main = [x[0] for x in rs]
        r_ctrl = [x[1] for x in rs]
        for s, (rm, rc, info) in zip(group, rs):
            s.update(r_main=rm, r_ctrl=rc, ratio=info['r'], valid=info['valid'],
                     g_star=t_row.get('g_star'))  # kept for save_rollouts
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
            s.update(a_main=am, a_ctrl=ac)
            if not s['tokens']:
                continue
            s['token_adv'] = token_advantages(len(s['tokens']), am, ac, use_ctrl_reward, ctrl_token_weight)
            rollouts.append(s)
    return rollouts, skipped, stats, budget_hist


def rollout_rows(step, samples):
    """One small row per rollout for {out_dir}/rollouts.jsonl (save_rollouts): what it chose,
    how long it thought, and what each reward and advantage made of it (a skipped group's
    rollouts have advantage 0)."""
    keys = ('id', 'difficulty', 'budget', 'g_star', 'correct', 'valid', 'think_tokens', 'ratio',
            'r_main', 'r_ctrl', 'a_main', 'a_ctrl')
    return [{'step': step, **{k: s.get(k, 0.0 if k.startswith('a_') else None) for k in keys}} for s in samples]


def keep_rows_upto(path, step):
    """Rewrite a rollouts.jsonl without the rows of steps after `step` (a resumed run replays them)."""
    if os.path.exists(path):
        write_jsonl(path, [r for r in read_jsonl_tolerant(path) if r['step'] <= step])


# -----------------------------------------------------------------------------
# question schedule


def step_questions(n_items, step, per_step, run_seed):
    """Indices of the `per_step` questions of a step: epochs of seeded permutations,
    so step s always takes the same questions (resume replays exactly)."""
    out = []
    start = step * per_step
    for k in range(start, start + per_step):
        epoch, pos = divmod(k, n_items)
        out.append(epoch_permutation(n_items, run_seed, epoch)[pos])
    return out


def initial_model(sample_model, ckpt, init_from, sample_amp, device):
    """The initial (SFT) policy in the sampling dtype, for the teacher pass and the KL reference:
    the sampling copy before any update, or init_from reloaded when resuming from `ckpt`."""
    if ckpt is None:
        return sample_model
    return Qwen3.from_pretrained(init_from, dtype=DTYPES[sample_amp], device=device).eval().requires_grad_(False)


def rollouts_per_update(questions_per_step, group_size, mu, world):
    """(questions per rank, rollouts per optimizer step over all ranks): questions_per_step is
    global, so an update's questions_per_step * group_size / mu rollouts do not depend on world."""
    per_rank, rest = divmod(questions_per_step, world)
    if rest or (per_rank * group_size) % mu:
        raise ValueError(f'questions_per_step / world * group_size = {questions_per_step} / {world} * {group_size} '
                         f'must be whole and a multiple of mu = {mu}: change questions_per_step, group_size or mu')
    return per_rank, questions_per_step * group_size // mu


# -----------------------------------------------------------------------------
# loading, metrics, checkpoints


def load_policy(source, tokenizer_path, device):
    """The SFT (or resumed) model in fp32 (the master weights) and its tokenizer, which must
    carry the budget tokens, trained: the checkpoint's own tokenizer must already know every id
    (a row-count check would miss budget tokens sitting in Qwen3's untrained padding rows)."""
    print0(f'loading {source}')
    model = Qwen3.from_pretrained(source, dtype=torch.float32, device=device)
    tok = load_tokenizer(tokenizer_path or source)
    n_trained = trained_vocab_size(resolve_model_dir(source), model.config.vocab_size)
    if tok.vocab_size > min(n_trained, model.config.vocab_size):
        raise ValueError(f'{source}: tokenizer has {tok.vocab_size} tokens but the checkpoint was trained on '
                         f'{n_trained} ({model.config.vocab_size} rows); run SFT with the budget tokens first')
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
               'ratio', 'loss_tokens', 'loss_clipped', 'loss_entropy', 'loss_kl_ref', 'loss_approx_kl', 'logp_gap',
               'loss_ctrl_entropy', 'loss_rollouts']
HIST_KEYS = FIXED_MODES + ['none']


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
            'ctrl_entropy': div(S['loss_ctrl_entropy'], S['loss_rollouts']),
            'kl_ref': div(S['loss_kl_ref'], S['loss_tokens']), 'approx_kl': div(S['loss_approx_kl'], S['loss_tokens']),
            'sampler_logp_gap': div(S['logp_gap'], S['loss_tokens']),
            'skipped_groups': n_skipped, 'gen_tokens_per_s': div(S['gen_tokens'], ts),
            'time_sample_s': ts, 'time_train_s': tt, 'grad_norm': stats['grad_norm'] / mu}


def log_line(row):
    hist = ' '.join(f"{k}:{v:.2f}" for k, v in row['budget_hist'].items() if v)
    return (f"step {row['step']}: acc {row['accuracy']:.3f} R_main {row['reward_main']:.3f} "
            f"R_ctrl {row['reward_ctrl']:.3f} think {row['think_tokens'] or 0:.0f} "
            f"ratio {row['realized_ratio'] or 0:.2f} | {hist} | clip {row['clip_frac'] or 0:.3f} "
            f"ent {row['entropy'] or 0:.2f} ctrl {row['ctrl_entropy'] or 0:.2f} skip {row['skipped_groups']:.0f} | "
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
    amp = resolve_autocast_dtype(autocast_dtype, device)
    sample_amp = amp if sample_dtype == 'auto' else resolve_autocast_dtype(sample_dtype, device, 'sample_dtype')
    per_rank, per_update = rollouts_per_update(questions_per_step, group_size, mu, world)
    print0(f'{per_update} rollouts per update ({questions_per_step} questions x {group_size} / mu {mu}), '
           f'{per_rank} questions per rank; update autocast {amp}, sampling in {sample_amp}')
    t_path = teacher_path or os.path.join(out_dir, 'teacher_budgets.jsonl')
    config = config_snapshot(globals())

    # ---- model (fp32 master weights), its sampling copy, tokenizer, RL questions (resume beats init_from)
    ckpt = find_checkpoint(out_dir) if resume else None
    model, tok = load_policy(ckpt or init_from, tokenizer_path, device)
    items = load_rl_items(rl_path, max_rl_questions)
    # memory plan before anything is written (prompt_len + 1: the teacher's budget token may be longer than AUTO)
    prompt_len = max(len(p) for p in build_prompts(tok, items, 'auto')) + 1
    phases = memplan.chrpo_plan(
        model.config, memplan.prompts_per_decode(per_rank, group_size, sample_batch_size), group_size,
        micro_batch_tokens, prompt_len, max_new_tokens, top_p, amp, world, activation_checkpointing, kl_coef,
        memplan.prompts_per_decode(math.ceil(teacher_chunk / world), teacher_samples, sample_batch_size),
        teacher_samples, sample_amp)
    runs = {'teacher': ['teacher labels'], 'train': ['rollouts', 'update']}.get(stage, list(phases))
    memplan.check({k: v for k, v in phases.items() if k in runs}, memplan.budget_bytes(device, memory_budget_gb),
                  'train_chrpo', print_fn=print0)
    os.makedirs(out_dir, exist_ok=True)
    # before compile: the sampler decodes with an eager copy (no copy needed for the teacher stage alone)
    sample_model = sampling_copy(model, sample_amp, separate=compile and stage != 'teacher')

    # ---- phase 1: teacher budgets (from the initial SFT model; skipped when cached and complete)
    if stage in ('teacher', 'all'):
        teacher_model = initial_model(sample_model, ckpt, init_from, sample_amp, device)
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
    # the KL reference is the initial policy, also after a resume (a copy: the sampling copy moves on)
    ref_model = None
    if kl_coef > 0:
        ref_model = copy.deepcopy(initial_model(sample_model, ckpt, init_from, sample_amp, device))
        ref_model.to(DTYPES[amp]).eval().requires_grad_(False)  # runs in the update's forward: its dtype
    model.set_activation_checkpointing(activation_checkpointing)  # before compile and DDP
    if compile:
        model.compile_blocks()  # in place: checkpoints keep plain state_dict keys
    ddp_model = DDP(model) if world > 1 else model
    optimizer = adamw(model, learning_rate, weight_decay, (0.9, 0.95), fused=device.type == 'cuda')
    step = resume_state(ckpt, optimizer, rank) if ckpt else 0
    autocast = make_autocast(device, amp)
    reward_kw = dict(max_new_tokens=max_new_tokens, reward_overrides=reward_overrides, use_mode_term=use_mode_term)
    update_kw = dict(mu=mu, micro_batch_tokens=micro_batch_tokens, grad_clip=grad_clip, temperature=temperature,
                     eps_low=eps_low, eps_high=eps_high, kl_coef=kl_coef, autocast=autocast,
                     ctrl_entropy_coef=ctrl_entropy_coef,
                     budget_ids=torch.tensor([tok.budget_ids[m] for m in FIXED_MODES], device=device))
    rollouts_path = os.path.join(out_dir, 'rollouts.jsonl' if rank == 0 else f'rollouts.rank{rank}.jsonl')
    if save_rollouts:  # after a resume the steps past the checkpoint run again: drop their old rows
        keep_rows_upto(rollouts_path, step)
    bar = tqdm(total=max_iters, initial=step, disable=rank != 0, desc='chrpo')
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    while step < max_iters:
        lr = lr_at(step, learning_rate, warmup_iters, max_iters, 'constant')
        for g in optimizer.param_groups:
            g['lr'] = lr
        # ---- rollouts: this rank's share of the step's questions, G samples each
        t0 = time.time()
        idx = step_questions(len(items), step, questions_per_step, seed)[rank::world]
        my_items = [items[i] for i in idx]
        samples = sample_and_grade(sample_model, tok, my_items, 'auto', n=group_size, temperature=temperature,
                                   top_p=top_p, max_new_tokens=max_new_tokens,
                                   seed=seed * 7 + step * world + rank, batch_size=sample_batch_size or None,
                                   cuda_graph=cuda_graph)
        t_sample = time.time() - t0
        # ---- rewards and group-normalized advantages (uniform groups dropped)
        t1 = time.time()
        rollouts, skipped, stats, budget_hist = score_groups(samples, my_items, teacher, group_size, reward_kw,
                                                             adv_std_floor, use_ctrl_reward, skip_uniform_groups,
                                                             ctrl_token_weight)
        # ---- logp_old, then mu mini-batch updates, micro-batched, token-normalized over the global mini-batch
        stats.update(policy_update(ddp_model, model, ref_model, optimizer, rollouts, world, tok.pad_id, device,
                                   **update_kw))
        refresh_sampling_copy(sample_model, model)
        t_train = time.time() - t1
        step += 1
        bar.update(1)

        row = step_metrics(step, lr, stats, budget_hist, skipped, t_sample, t_train, world, mu, device)
        if save_rollouts:  # every rank its own file: rollouts.jsonl, rollouts.rank1.jsonl, ...
            append_jsonl(rollouts_path, *rollout_rows(step, samples))
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
