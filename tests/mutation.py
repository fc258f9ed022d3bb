"""Mutation pass (not collected by pytest): plausible one-line bugs in the rewards, grading, the
CHRPO loop, evaluation and data, each applied alone to a scratch copy of the repository,
then the targeted tests are run; a mutation is "killed" when they fail.

    python tests/mutation.py                # all mutations, a table and the kill rate
    python tests/mutation.py --only 3,17    # some of them (numbers from --list)
    python tests/mutation.py --list

Each mutation is (file, exact original snippet, mutated snippet, pytest arguments). The
snippet must occur exactly once in the current file; otherwise the mutation is reported
as "stale" (the code moved on: update or drop it) and skipped, never applied.
The working tree is never modified: the files git knows about are copied to a temporary
folder and mutated there.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RV, RW, GR = 'tests/test_reward_values.py', 'tests/test_rewards.py', 'tests/test_grading_wiring.py'
LOOP, CH, TE = 'tests/test_chrpo_loop.py', 'tests/test_chrpo.py', 'tests/test_chrpo_teacher.py'
EW, EV, DA, SA = 'tests/test_evaluate_wiring.py', 'tests/test_evaluate.py', 'tests/test_data.py', 'tests/test_sampler.py'
GRT = 'tests/test_grading.py'
FAST_CH = [CH, '-k', 'not torchrun and not kill']  # test_chrpo.py without its subprocess runs

# (file, original snippet, mutated snippet, pytest args)
MUTATIONS = [
    # ---- rewards: the CHRPO reward terms
    ('rewards.py', 'return x * x / (2 * delta) if x <= delta else x - delta / 2',
     'return x * x / (2 * delta) if x <= delta else x - delta', [RV]),
    ('rewards.py', 'excess = max(0.0, off - cfg["band"])',
     'excess = max(0.0, off - cfg["huber_delta"])', [RV]),
    ('rewards.py', 'cfg["w_cal"] * huber(excess, cfg["huber_delta"])',
     'cfg["w_cal"] * huber(excess, cfg["band"])', [RV]),
    ('rewards.py', 'cfg["w_center"] * min(off, cfg["band"])', 'cfg["w_center"] * off', [RV]),
    ('rewards.py', 'else 1.0 - cfg["w_over"] * (c - g_star)', 'else 1.0 - (c - g_star)', [RV]),
    ('rewards.py', 'min(cfg["kappa"], cfg["w_short"] * (1.0 - r))',
     'min(cfg["kappa"], cfg["w_short"] * max(0.0, 1.0 - r))', [RV]),
    ('rewards.py', 'lam = cfg["lambda_under"] if c < g_star - 1e-9 else cfg["lambda_over"]',
     'lam = cfg["lambda_under"] if c <= g_star + 1e-9 else cfg["lambda_over"]', [RV]),
    ('rewards.py', 'lam = cfg["lambda_under"] if c < g_star - 1e-9 else cfg["lambda_over"]',
     'lam = cfg["lambda_over"] if c < g_star - 1e-9 else cfg["lambda_under"]', [RV]),
    ('rewards.py', 'return -cfg["w_mode"] * lam', 'return -lam', [RV]),
    ('rewards.py', 'shaping = min(cfg["tier_clip"], max(-cfg["tier_clip"], shaping))',
     'shaping = min(cfg["tier_clip"], shaping)', [RV]),
    ('rewards.py', 'return -2.0 * max(lam_u, lam_o)', 'return -2.0 * lam_u', [RV]),
    ('rewards.py', 'return (1.0 if correct else 0.0) - lam_u * (1.0 - c)',
     'return (1.0 if correct else 0.0) - lam_o * (1.0 - c)', [RV]),
    ('rewards.py', 'return 1.0 + min(kappa, g_star - c) if under else 1.0 - (c - g_star)',
     'return 1.0 + (g_star - c) if under else 1.0 - (c - g_star)', [RV]),
    ('rewards.py', 'return -lam_u * (1.0 + (g_star - c)) if under else -lam_o',
     'return -lam_u if under else -lam_o', [RV]),
    ('rewards.py', 'if finish_reason != "stop":', 'if finish_reason not in ("stop", "length"):', [LOOP]),
    # ---- grading
    ('grading.py', 'return (whole - frac if m.group(1).startswith("-") else whole + frac), pct',
     'return whole + frac, pct', [GR]),
    ('grading_symbolic.py', 'tol = REL_TOL if "." in a_text + b_text else 1e-30',
     'tol = REL_TOL if "." in a_text + b_text else 1e-3', [GR]),
    ('grading.py', '_MIXED_SLASH = re.compile(r"([-+]?\\d+) (\\d+)/(\\d+)")',
     '_MIXED_SLASH = re.compile(r"(\\d+) (\\d+)/(\\d+)")', [GR]),
    ('grading_symbolic.py', 'return False  # integers match exactly', 'pass  # integers match exactly',
     [GRT, '-k', 'fast_path or matches_expected']),
    ('grading_symbolic.py', 'if n.is_Integer and n % 2 == 1 and x.is_number and x.is_negative:',
     'if n.is_Integer and n % 2 == 0 and x.is_number and x.is_negative:', [GRT, '-k', 'matches_expected']),
    # ---- CHRPO: reward wiring
    ('train_chrpo.py', "L = teacher.get('ref_full_len') or max_new_tokens", 'L = max_new_tokens', [LOOP]),
    ('train_chrpo.py', "rewards.check_integrity(sample['parsed'], sample['finish_reason'], sample['tokens'])",
     "rewards.check_integrity(sample['parsed'], 'stop', sample['tokens'])", [LOOP]),
    ('train_chrpo.py', "cfg['use_mode_term'] = use_mode_term", "cfg['use_mode_term'] = True", [LOOP]),
    ('train_chrpo.py', 'rm, rc = rewards.rollout_rewards(', 'rc, rm = rewards.rollout_rewards(', [LOOP]),
    # ---- CHRPO: advantages and their placement
    ('train_chrpo.py', 'std = t.std(unbiased=False)', 'std = t.std()', FAST_CH),
    ('train_chrpo.py', 'return ((t - t.mean()) / (max(float(std), std_floor) + 1e-6)).tolist()',
     'return (t - t.mean()).tolist()', FAST_CH),
    ('train_chrpo.py', 'adv[0] = a_ctrl', 'adv[-1] = a_ctrl', FAST_CH),
    ('train_chrpo.py', 'if n_tokens and use_ctrl:', 'if n_tokens:', FAST_CH),
    ('train_chrpo.py', 'a_ctrl = group_advantages(r_ctrl, adv_std_floor) if use_ctrl_reward else [0.0] * len(group)',
     'a_ctrl = group_advantages(r_ctrl, adv_std_floor)', [LOOP]),
    ('train_chrpo.py', 'if skip_uniform_groups and not any(a_main) and not any(a_ctrl):',
     'if skip_uniform_groups and not any(a_main):', [LOOP]),
    ('train_chrpo.py', "token_advantages(len(s['tokens']), am, ac, use_ctrl_reward, ctrl_token_weight)",
     "token_advantages(len(s['tokens']), ac, am, use_ctrl_reward, ctrl_token_weight)", [LOOP]),
    ('train_chrpo.py', 'group = samples[qi * group_size:(qi + 1) * group_size]',
     'group = samples[qi:qi + group_size]', [LOOP]),
    # ---- CHRPO: the loss
    ('train_chrpo.py', "my_items, 'auto', n=group_size, temperature=temperature,",
     "my_items, 'auto', n=group_size, temperature=1.0,", [LOOP]),
    ('chrpo_loss.py', 'logp, entropy = token_logprobs(ddp_model, raw_model.lm_head.weight, x, flat_y, temperature,',
     'logp, entropy = token_logprobs(ddp_model, raw_model.lm_head.weight, x, flat_y, 1.0,', [LOOP]),
    ('chrpo_loss.py', 'loss_tok = loss_tok + kl_coef * kl_tok', 'loss_tok = loss_tok - kl_coef * kl_tok', [LOOP]),
    ('chrpo_loss.py', 'd = ref_logp - logp', 'd = logp - ref_logp', [LOOP]),
    ('chrpo_loss.py', 'loss = (loss_tok * mask).sum() / global_tokens * world',
     'loss = (loss_tok * mask).sum() / mask.sum() * world', FAST_CH),
    ('chrpo_loss.py', "r['logp_old'] = logp[b, P - 1:P - 1 + R].cpu()", "r['logp_old'] = logp[b, P:P + R].cpu()",
     [LOOP]),
    ('chrpo_loss.py', "r['logp_old'] = logp[b, P - 1:P - 1 + R].cpu()",
     "r['logp_old'] = torch.as_tensor(r['logprobs'], dtype=torch.float32)", ['tests/test_chrpo_precision.py']),
    ('chrpo_loss.py', 'if micro and (len(micro[-1]) + 1) * width <= max_tokens:',
     'if micro and len(micro[-1]) * width <= max_tokens:', ['tests/test_chrpo_precision.py']),
    ('train_sft.py', 'new_ids = model.fit_vocab(tok.vocab_size, n_trained)', 'new_ids = []',
     ['tests/test_sft_precision.py']),
    ('train_sft.py', 'accum = accumulation_steps(global_batch_size, batch_size, world)', 'accum = 1',
     ['tests/test_sft_precision.py']),
    ('train_sft.py', 'raw_model.set_activation_checkpointing(activation_checkpointing)  # before compile and DDP/FSDP',
     'pass', ['tests/test_sft_precision.py']),
    ('train_chrpo.py', 'refresh_sampling_copy(sample_model, model)', 'pass  # stale sampling copy',
     ['tests/test_chrpo_precision.py']),
    ('train_chrpo.py', '    if ckpt is None:\n        return sample_model', '    if True:\n        return sample_model',
     ['tests/test_chrpo_precision.py']),
    ('train_chrpo.py', 'model, tok = load_policy(ckpt or init_from, tokenizer_path, device)',
     'model, tok = load_policy(ckpt or init_from, tokenizer_path, device); model.bfloat16()',
     ['tests/test_chrpo_precision.py']),
    ('chrpo_loss.py', 'clipped = rho.clamp(1 - eps_lo, 1 + eps_hi) * adv',
     'clipped = rho.clamp(1 - eps_hi, 1 + eps_lo) * adv', FAST_CH),
    ('chrpo_loss.py', 'loss = -torch.minimum(unclipped, clipped)', 'loss = -torch.maximum(unclipped, clipped)',
     FAST_CH),
    ('chrpo_loss.py', "global_tokens = max(1.0, all_reduce_sum([sum(len(r['tokens']) for mb in micro for r in mb)],",
     "global_tokens = max(1.0, all_reduce_sum([sum(len(r['tokens']) for r in rollouts)],",
     [LOOP, CH, '-k', 'not torchrun and not kill']),
    # ---- the stop token
    ('evaluate.py', "tokens = [int(t) for t in o['tokens']]",
     "tokens = [int(t) for t in o['tokens'] if int(t) not in tok.stop_ids]", [LOOP]),
    ('sampler.py', 'length = s + 1 if stopped else max_new_tokens', 'length = s if stopped else max_new_tokens',
     [SA, '-k', 'stop']),
    # ---- CHRPO: question schedule, ranks, teacher budgets
    ('common.py', 'g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)',
     'g = torch.Generator().manual_seed(seed)', [TE]),
    ('train_chrpo.py', 'out.append(epoch_permutation(n_items, run_seed, epoch)[pos])', 'out.append(pos)', [TE]),
    ('train_chrpo.py', 'idx = step_questions(len(items), step, questions_per_step, seed)[rank::world]',
     'idx = step_questions(len(items), step, questions_per_step, seed)[:questions_per_step // world]',
     [CH, '-k', 'torchrun']),
    ('train_chrpo.py', 'for b in sorted(solved, reverse=True):', 'for b in sorted(solved):', FAST_CH),
    ('train_chrpo.py', 'solved[b] = share >= solve_share', 'solved[b] = share > solve_share', [TE]),
    ('train_chrpo.py', 'else (max(any_closed) if any_closed else None)',
     'else (min(any_closed) if any_closed else None)', [TE]),
    ('train_chrpo.py', 'done = set(finished_questions(path, 1)) if rank == 0 else set()', 'done = set()', [TE]),
    ('train_chrpo.py', 'per_budget[b][qi * teacher_samples:(qi + 1) * teacher_samples]',
     'per_budget[b][qi:qi + teacher_samples]', [TE]),
    ('evaluate.py', 'chunk_rows = sample_chunk(todo[c:c + step])', 'chunk_rows = sample_chunk(todo[c:c + step + 1])',
     [TE]),
    ('train_chrpo.py', 'seed=seed + 7919 * (chunk[0] + 1) + rank + int(b * 10)',
     'seed=seed + 7919 * (todo.index(chunk[0]) + 1) + rank + int(b * 10)', [TE]),
    # ---- evaluation
    ('evaluate.py', "[str(it['id']) for it in items], settings], sort_keys=True)",
     "[str(it['id']) for it in items]], sort_keys=True)", [EW]),
    ('metrics.py', "for cand in ((bench, reference_model, 'none'), (bench, model_name, '1.0'), "
                    "(bench, model_name, 'none')):",
     "for cand in ((bench, model_name, '1.0'), (bench, reference_model, 'none'), (bench, model_name, 'none')):",
     [EW]),
    ('metrics.py', 'sum(e <= tol + 1e-9 for e in errs)', 'sum(e <= tol for e in errs)', [EW]),
    ('evaluate.py', 'finished = {k: v for k, v in finished.items() if len(v) == rows_per_item}',
     'finished = {k: v for k, v in finished.items() if v}', [EW]),
    ('evaluate.py', 'write_jsonl(path, [r for v in finished.values() for r in v])', 'write_jsonl(path, prior)',
     [EW]),
    ('evaluate.py', 'index = list(range(rank, len(items), world))', 'index = list(range(len(items)))', [EW]),
    ('evaluate.py', "rows += sorted(got, key=lambda r: r['sample_index'])[:n]", 'rows += got[:n]', [EW]),
    ('evaluate.py', "correct = (pred is not None and boxed and finish_reason == 'stop' and think_closed",
     'correct = (pred is not None and boxed and think_closed', [EV, '-k', 'grade']),
    # ---- data and common
    ('data.py', "'think_tokens': end - start - 1 if closed else None,",
     "'think_tokens': end - start if closed else None,", [LOOP]),
    ('data.py', 'budget = tok.id_to_budget.get(ids[0]) if ids else None',
     'budget = tok.id_to_budget.get(ids[-1]) if ids else None', [LOOP]),
    ('common.py', '    drop_torn_tail(path)\n    with open(path, \'a\') as f:', "    with open(path, 'a') as f:",
     ['tests/test_common.py']),
    ('common.py', "    lines.pop()  # ''", "    lines = lines if lines[-1] else lines[:-1]  # ''", ['tests/test_common.py']),
    ('data.py', "    if mode == 'base':\n        return 'none'", "    if mode == 'base':\n        return 'base'",
     [DA, '-k', 'mode_name']),
    # ---- the SFT build: one definition of a loop, the shared sampling cache
    ('build_sft_data.py', 'return len(ids) < min_tokens or is_degenerate(ids)', 'return len(ids) < min_tokens',
     ['tests/test_compressor.py', '-k', 'build']),
    ('build_sft_data.py', 'seed=seed + chunk[0])', 'seed=seed)', ['tests/test_compressor.py', '-k', 'build']),
    # ---- the TokenSkip-style baseline and the paper's paired comparisons
    ('tokenskip.py', 'cots = [cot for _, cot in pairs]', "cots = [q + ' ' + cot if q else cot for q, cot in pairs]",
     ['tests/test_tokenskip.py']),
    ('tokenskip.py', 'y[b, len(prefix) - 1:len(ids) - 1] = torch.tensor(ids[len(prefix):])',
     'y[b, len(prefix):len(ids)] = torch.tensor(ids[len(prefix):])', ['tests/test_tokenskip.py']),
    ('tokenskip.py', 'med = sorted(values)[(len(values) - 1) // 2]', 'med = sorted(values)[len(values) // 2]',
     ['tests/test_tokenskip.py']),
    ('metrics.py', 'think, think_hw = mean_ci95([a[k] - b[k] for k in a if k in b])',
     'think, think_hw = mean_ci95([b[k] - a[k] for k in a if k in b])', ['tests/test_report_paper.py']),
]


def tracked_files():
    out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if os.path.isfile(os.path.join(ROOT, p))]


def run_tests(work, args, timeout):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *args]
    try:
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 'timeout', ''
    failed = [l.split(' ')[1] for l in p.stdout.splitlines() if l.startswith(('FAILED ', 'ERROR '))]
    if failed:
        return p.returncode, failed[0]
    last = (p.stdout + p.stderr).strip().splitlines()
    return p.returncode, last[-1] if last else ''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', default='', help='comma-separated mutation numbers')
    ap.add_argument('--list', action='store_true')
    ap.add_argument('--timeout', type=int, default=600, help='seconds per mutation test run')
    opt = ap.parse_args()
    chosen = [int(x) for x in opt.only.split(',') if x] or list(range(1, len(MUTATIONS) + 1))
    if opt.list:
        for i in chosen:
            f, a, b, t = MUTATIONS[i - 1]
            print(f'{i:3d} {f}: {a!r} -> {b!r}  [{" ".join(t)}]')
        return
    work = tempfile.mkdtemp(prefix='mutation_')
    try:
        for p in tracked_files():
            os.makedirs(os.path.join(work, os.path.dirname(p)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, p), os.path.join(work, p))
        results = []
        for i in chosen:
            f, orig, mut, args = MUTATIONS[i - 1]
            path = os.path.join(work, f)
            src = open(path).read()
            t0 = time.time()
            if src.count(orig) != 1:
                status, by = 'stale', f'snippet found {src.count(orig)} times'
            else:
                with open(path, 'w') as fh:
                    fh.write(src.replace(orig, mut))
                try:
                    rc, by = run_tests(work, args, opt.timeout)
                finally:
                    with open(path, 'w') as fh:
                        fh.write(src)
                status = {0: 'SURVIVED', 5: 'no tests', 'timeout': 'timeout'}.get(rc, 'killed')
            results.append((i, f, orig, mut, status, by))
            print(f'{i:3d} {status:9s} {time.time() - t0:5.1f}s {f}: {orig.strip()[:60]!r} -> {mut.strip()[:60]!r}'
                  f'  [{by}]', flush=True)
        applied = [r for r in results if r[4] != 'stale']
        killed = [r for r in applied if r[4] == 'killed']
        print(f'\nkilled {len(killed)}/{len(applied)} applied mutations'
              f' ({100 * len(killed) / max(1, len(applied)):.0f}%), {len(results) - len(applied)} stale')
        for r in results:
            if r[4] != 'killed':
                print(f'  {r[4]}: #{r[0]} {r[1]}: {r[2]!r} -> {r[3]!r} ({r[5]})')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
