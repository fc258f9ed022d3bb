"""
Stage 2 data of Extra-CoT: the mixed-ratio SFT set, built by compressing the base model's
own correct CoTs with the trained compressor; and, once CHRPO's teacher has labelled the RL
questions with budgets g*, the POLICY warm-up set.

    python build_sft_data.py config/tiny_sft_data.py                             # -> out/data/sft_mixed.jsonl
    python build_sft_data.py config/tiny_sft_data.py config/tiny_policy_data.py  # -> out/data/sft_policy.jsonl
    torchrun --standalone --nproc_per_node=8 build_sft_data.py config/qwen3_1p7b_sft_data.py   # paper scale

The mixed-ratio set (the Extra-CoT paper, Stage 2): the base model answers the SFT pool
(evaluate.sample_and_grade, mode 'none'); only correct answers with a closed <think> are kept;
each own CoT is compressed at compress_ratios (0.1..0.9) and re-bucketed by realized ratio to
the nearest of {0.2,0.4,0.6,0.8} within +-bucket_tol (the closest compression wins a bucket);
the original forms 1.0 (half the questions get mode '1.0', half 'none', as in the paper); only
questions present in every bucket survive; degenerate CoTs (too few tokens, a repeated n-gram
loop) are dropped and counted.

The POLICY warm-up set (teacher_path set: the teacher budgets train_chrpo.py --stage=teacher
wrote): mode 'auto' items answered with chosen = g* (all-fail questions: '1.0') and the CoT
compressed at g*, warmup_fraction of the fixed-mode records in number, mixed as in the paper
(0.2:18% 0.4:24% 0.6:26% 0.8:22% 1.0:10%; warmup_mix='paper') or as the labels come
('natural'), beside replay_fraction of the fixed-mode records.

The base model's graded answers are cached per question (samples_cache_path), so the warm-up
build only samples the teacher's questions that the first build did not see. Output is
written atomically.

Distributed (torchrun): every rank answers its share of the uncached questions (evaluate.shard,
as evaluation splits a benchmark; sample_batch_size rows decoded at once, lowered by the memory
plan; chunks appended to a per-rank .partial file, so a killed build resumes) and compresses its
share of the CoTs; rank 0 merges and writes. No stage leaves the other ranks idle for long, and
dist_timeout_s bounds how long a barrier waits for the slowest rank's share.
"""
import glob
import json
import os
import random
import time

import evaluate
import memplan
from common import (barrier, cleanup_dist, drop_torn_tail, is_main, print0, read_jsonl, read_jsonl_tolerant, setup_dist,
                    write_jsonl)
from compressor import compress_batch, load_compressor
from data import answer_text, mode_name, render_completion
from model import Qwen3
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# config (module globals; configurator.py overrides them from a config file / --key=value)
compressor_ckpt = 'out/compressor/ckpt'  # the trained compressor (train_compressor.py)
base_ckpt = 'out/base/ckpt'         # the reasoning model whose own CoTs are compressed
pool_path = 'out/data/sft_pool.jsonl'  # questions the base model answers
out_path = 'out/data/sft_mixed.jsonl'  # the SFT records written
samples_cache_path = 'out/sft_data/base_samples.jsonl'  # the base model's graded answers, reused by later builds
max_questions = 0                   # 0 = the whole pool
n_samples = 1                       # samples per question (the first correct one is used)
temperature = 0.7                   # sampling temperature for the own CoTs
top_p = 0.9                         # nucleus sampling
max_new_tokens = 512                # generation cap (truncated outputs are wrong)
seed = 1234                         # sampling seed, and the seed of every shuffle here
compress_ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # ratios each CoT is compressed at
bucket_tol = 0.05                   # realized ratio must be within this of a bucket
min_cot_tokens = 4                  # fewer reasoning tokens than this = degenerate
max_ngram_repeats = 6               # a 4-gram seen more often than this = degenerate loop
compress_batch_size = 16            # CoTs per forward pass when compressing
sample_batch_size = 64              # rows the base model decodes at once (lowered by the memory plan on a GPU)
chunk_questions = 256               # questions per appended chunk of a rank's samples (a kill loses one chunk)
cuda_graph = True                   # CUDA-graph decode on CUDA, the sampler's fastest path there (no effect on CPU)
dist_timeout_s = 4 * 3600           # process-group timeout: ranks wait at barriers while the others finish their shares
fallback_gold_cots = False          # smoke runs only: corpus CoTs stand in for questions the base model missed
device_type = 'auto'                # 'auto', 'cpu' or 'cuda'
# the POLICY warm-up set
teacher_path = ''                   # '' = the mixed-ratio set only; a teacher budgets jsonl = add POLICY warm-up items
warmup_fraction = 0.2               # POLICY warm-up items, as a share of the fixed-mode records
warmup_mix = 'paper'                # 'paper': cap each budget at the paper's warm-up share; 'natural': the label distribution
replay_fraction = 1.0               # with teacher budgets: share of the fixed-mode records kept beside the warm-up items

BUCKETS = [0.2, 0.4, 0.6, 0.8]      # re-bucketing targets (1.0 = the original)
POLICY_MIX = {'0.2': 0.18, '0.4': 0.24, '0.6': 0.26, '0.8': 0.22, '1.0': 0.10}  # the paper's warm-up mix


# -----------------------------------------------------------------------------
# own CoTs, re-bucketing

def is_degenerate(rtok, text, min_tokens, max_repeats, n=4):
    """Too short, or some n-gram of reasoning tokens repeated more than max_repeats times."""
    ids = rtok.encode(text)
    if len(ids) < min_tokens:
        return True
    counts = {}
    for i in range(len(ids) - n + 1):
        g = tuple(ids[i:i + n])
        counts[g] = counts.get(g, 0) + 1
    return max(counts.values(), default=0) > max_repeats


def own_cot(sample, rtok):
    """The text strictly between <think> and </think> of a graded sample, stripped, or None."""
    ids = list(sample['tokens'])
    if rtok.think_start_id not in ids:
        return None
    s = ids.index(rtok.think_start_id)
    if rtok.think_end_id not in ids[s + 1:]:
        return None
    e = ids.index(rtok.think_end_id, s + 1)
    return rtok.decode(ids[s + 1:e], skip_special_tokens=True).strip()


def rebucket(rows, tol):
    """bucket -> the compression whose realized ratio is nearest to it, within tol."""
    best = {}
    for r in rows:
        b = min(BUCKETS, key=lambda b: abs(r['realized_ratio'] - b))
        d = abs(r['realized_ratio'] - b)
        if d <= tol + 1e-9 and (b not in best or d < abs(best[b]['realized_ratio'] - b)):
            best[b] = r
    return best


def usable_cots(samples, rtok, min_cot_tokens, max_ngram_repeats, stats):
    """id -> (question, gold, cot, difficulty): each question's first correct, closed, non-degenerate CoT."""
    cots = {}
    for s in samples:
        if not s.get('correct') or s['id'] in cots:
            continue
        stats['correct'] += 1
        cot = own_cot(s, rtok)
        if not cot:
            continue
        if is_degenerate(rtok, cot, min_cot_tokens, max_ngram_repeats):
            stats['degenerate'] += 1
            continue
        cots[s['id']] = (s['question'], s['gold'], cot, s.get('difficulty'))
    return cots


# -----------------------------------------------------------------------------
# records

def fixed_mode_records(cots, comp, rtok, bucket_tol, min_cot_tokens, max_ngram_repeats, rng, stats):
    """Per question present in every bucket: one record per bucket 0.2..0.8 and the original
    (ratio 1.0), which carries <COMP_100> for half the questions and no budget token for the
    other half (the paper's split)."""
    records, full_ids = [], []
    for qid in cots:
        q, gold, cot, _ = cots[qid]
        ok = [r for r in comp[qid] if not is_degenerate(rtok, r['text'], min_cot_tokens, max_ngram_repeats)]
        stats['degenerate'] += len(comp[qid]) - len(ok)
        buckets = rebucket(ok, bucket_tol)
        if len(buckets) < len(BUCKETS):
            stats['missing_bucket'] += 1
            continue
        full_ids.append(qid)
        for b in BUCKETS:
            records.append({'id': qid, 'question': q, 'cot': buckets[b]['text'], 'answer': gold, 'mode': mode_name(b),
                            'realized_ratio': round(buckets[b]['realized_ratio'], 4)})
        records.append({'id': qid, 'question': q, 'cot': cot, 'answer': gold, 'mode': None, 'realized_ratio': 1.0})
    full = [r for r in records if r['mode'] is None]
    rng.shuffle(full)
    for k, r in enumerate(full):
        r['mode'] = '1.0' if k < (len(full) + 1) // 2 else 'none'
    stats['questions'] = len(full_ids)
    return records


def policy_warmup_records(cots, comp, teacher, n_fixed, rng, warmup_fraction, warmup_mix):
    """POLICY warm-up items: mode 'auto', chosen = g* (all-fail -> '1.0'), the CoT compressed
    nearest to g*; about warmup_fraction * n_fixed of them, mixed per warmup_mix."""
    by_bucket = {m: [] for m in POLICY_MIX}
    for t in teacher:
        if t['id'] not in cots:
            continue
        chosen = '1.0' if t.get('g_star') is None else mode_name(t['g_star'])
        q, gold, cot, _ = cots[t['id']]
        if chosen == '1.0':
            text, rr = cot, 1.0
        else:
            row = min(comp[t['id']], key=lambda r: abs(r['realized_ratio'] - float(chosen)))
            text, rr = row['text'], row['realized_ratio']
        by_bucket[chosen].append({'id': t['id'], 'question': q, 'cot': text, 'answer': gold, 'mode': 'auto',
                                  'chosen': chosen, 'realized_ratio': round(rr, 4)})
    want = round(warmup_fraction * n_fixed)
    warm = []
    for m, share in POLICY_MIX.items():
        rng.shuffle(by_bucket[m])
        if warmup_mix == 'paper':  # at most the paper's share of each budget
            warm += by_bucket[m][:round(share * want)]
        else:  # 'natural': the labels as they come, scaled to `want` items in all
            total = sum(len(v) for v in by_bucket.values())
            warm += by_bucket[m][:round(len(by_bucket[m]) * min(1.0, want / max(1, total)))]
    return warm


def compress_cots(model, tok, cots, rtok, compress_ratios, compress_batch_size, rank=0, world=1, parts_path=''):
    """id -> compress_batch rows of its CoT at every ratio. Under torchrun each rank compresses
    its evaluate.shard of the CoTs and writes them to parts_path.rank{r}of{world}; after a
    barrier every rank reads every part, so all ranks return the same dict."""
    ids = list(cots)
    mine = [ids[i] for i in evaluate.shard(len(ids), rank, world)]
    comp = dict(zip(mine, compress_batch(model, tok, [(cots[i][0], cots[i][2]) for i in mine], compress_ratios, rtok,
                                         batch_size=compress_batch_size)))
    if world == 1:
        return comp
    write_jsonl(f'{parts_path}.rank{rank}of{world}', [{'id': i, 'rows': comp[i]} for i in mine])
    barrier()
    comp = {r['id']: r['rows'] for k in range(world) for r in read_jsonl(f'{parts_path}.rank{k}of{world}')}
    barrier()  # every rank has read every part
    if rank == 0:
        for k in range(world):
            os.remove(f'{parts_path}.rank{k}of{world}')
    return comp


def build_sft_records(model, tok, samples, rtok, teacher, *, compress_ratios, bucket_tol, min_cot_tokens,
                      max_ngram_repeats, compress_batch_size, seed, replay_fraction, warmup_fraction, warmup_mix,
                      rank=0, world=1, parts_path=''):
    """SFT records from graded samples (evaluate.sample_and_grade rows): the fixed-mode records,
    plus POLICY warm-up items when teacher budget rows are given. The compression is split over
    the ranks (compress_cots); every rank returns the same (records, stats)."""
    stats = {'samples': len(samples), 'correct': 0, 'degenerate': 0, 'missing_bucket': 0, 'questions': 0}
    cots = usable_cots(samples, rtok, min_cot_tokens, max_ngram_repeats, stats)
    comp = compress_cots(model, tok, cots, rtok, compress_ratios, compress_batch_size, rank, world, parts_path)
    rng = random.Random(seed)
    records = fixed_mode_records(cots, comp, rtok, bucket_tol, min_cot_tokens, max_ngram_repeats, rng, stats)
    if teacher:
        if replay_fraction < 1.0:  # a warm-up round keeps only this share of the fixed-mode records
            rng.shuffle(records)
            records = records[:round(replay_fraction * len(records))]
        warm = policy_warmup_records(cots, comp, teacher, len(records), rng, warmup_fraction, warmup_mix)
        stats['warmup'] = len(warm)
        records += warm
    rng.shuffle(records)
    return records, stats


def print_bucket_table(records):
    print0('mode   | count | mean realized ratio')
    groups = {}
    for r in records:
        key = r['mode'] if r['mode'] != 'auto' else f"auto/{r['chosen']}"
        groups.setdefault(key, []).append(r['realized_ratio'])
    for key in sorted(groups):
        v = groups[key]
        print0(f'{key:6s} | {len(v):5d} | {sum(v) / len(v):.3f}')


# -----------------------------------------------------------------------------
# the base model's answers, sampled by every rank

def partial_paths(cache_path):
    """The per-rank files of unmerged samples next to the cache (any world size)."""
    return sorted(glob.glob(glob.escape(cache_path) + '.rank*of*.partial'))


def rows_by_id(path, base_ckpt):
    """id -> the rows of `path` that base_ckpt wrote (a torn last line dropped)."""
    found = {}
    for r in read_jsonl_tolerant(path):
        if r.get('base_ckpt') == os.path.abspath(base_ckpt):
            found.setdefault(r['id'], []).append(r)
    return found


def append_rows(path, rows):
    """One write of jsonl rows (after cutting a torn last line): a kill loses this write at most."""
    drop_torn_tail(path)
    with open(path, 'a') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in rows))


def read_base_samples(cache_path, base_ckpt, n_samples):
    """id -> the base model's graded rows (base_ckpt's own), from the merged cache and any
    per-rank .partial files a killed run left. A question counts once (its first file), and
    only with at least n_samples rows, the last n_samples (a torn chunk is sampled again, and a
    resumed rank appends the fresh rows after the torn ones)."""
    cached = {}
    for path in [cache_path] + partial_paths(cache_path):
        cached.update({k: v[-n_samples:] for k, v in rows_by_id(path, base_ckpt).items()
                       if k not in cached and len(v) >= n_samples})
    return cached


def merge_base_samples(cache_path, base_ckpt, n_samples):
    """Rank 0: the questions of the .partial files appended to the cache, the files removed."""
    in_cache = {k for k, v in rows_by_id(cache_path, base_ckpt).items() if len(v) >= n_samples}
    new = [r for k, rows in read_base_samples(cache_path, base_ckpt, n_samples).items() if k not in in_cache
           for r in rows]
    if new:
        append_rows(cache_path, new)
    for path in partial_paths(cache_path):
        os.remove(path)


def sample_base_answers(base, rtok, items, cache_path, base_ckpt, *, n_samples, temperature, top_p, max_new_tokens,
                        seed, batch_size, chunk_questions, rank=0, world=1, cuda_graph=False):
    """Graded samples of the base model for every item, in item order, on every rank. Questions
    in the cache (same base_ckpt) are reused; the rest are split over the ranks as evaluation
    splits them (evaluate.shard), each rank appending its chunks of chunk_questions to its own
    .partial file, decoding batch_size rows at once; rank 0 then merges them into the cache."""
    os.makedirs(os.path.dirname(cache_path) or '.', exist_ok=True)
    cached = read_base_samples(cache_path, base_ckpt, n_samples)
    todo = [it for it in items if it['id'] not in cached]
    barrier()  # every rank has read the same cache before any rank writes
    print0(f'build: {len(items) - len(todo)} questions answered before (cache), {len(todo)} to sample '
           f'over {world} rank(s)')
    mine = evaluate.shard(len(todo), rank, world)
    part = f'{cache_path}.rank{rank}of{world}.partial'
    for c in range(0, len(mine), chunk_questions):
        chunk = mine[c:c + chunk_questions]
        new = evaluate.sample_and_grade(base, rtok, [todo[i] for i in chunk], mode='none', n=n_samples,
                                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                        seed=seed + chunk[0], batch_size=batch_size, cuda_graph=cuda_graph)
        rows = [dict({k: s[k] for k in ('id', 'question', 'gold', 'difficulty', 'correct', 'tokens')},
                     base_ckpt=os.path.abspath(base_ckpt)) for s in new]
        append_rows(part, rows)
        print0(f'build: {min(c + chunk_questions, len(mine))}/{len(mine)} questions sampled (rank 0)')
    barrier()
    if rank == 0:
        merge_base_samples(cache_path, base_ckpt, n_samples)
    barrier()
    cached = read_base_samples(cache_path, base_ckpt, n_samples)
    return [r for it in items for r in cached[it['id']]]


def gold_cot_samples(items, samples, rtok):
    """Smoke runs only: a minuscule base model answers nothing correctly, so questions it missed
    get their corpus CoT as if the model had written it (the paper warns that training on
    non-own CoTs costs accuracy: never use this for a real run)."""
    solved = {s['id'] for s in samples if s['correct']}
    fallback = [it for it in items if it['id'] not in solved and it.get('cot')]
    print0(f'build: {len(fallback)} questions use their corpus CoT (fallback_gold_cots, smoke runs only)')
    return [{'id': it['id'], 'question': it['question'], 'gold': it['answer'], 'difficulty': it.get('difficulty'),
             'correct': True, 'tokens': rtok.encode(render_completion(it['cot'], answer_text(it['answer']), 'none'))}
            for it in fallback]


def load_items(pool_path, max_questions, teacher_path):
    """(the questions the base model answers, the teacher rows or None): the pool (its first
    max_questions), plus the teacher's questions it lacks (they need warm-up items too)."""
    items = read_jsonl(pool_path)
    if max_questions:
        items = items[:max_questions]
    teacher = read_jsonl(teacher_path) if teacher_path else None
    if teacher:
        known = {it['id'] for it in items}
        items += [{'id': t['id'], 'question': t['question'], 'answer': t['answer']}
                  for t in teacher if t['id'] not in known]
    return items, teacher


def check_inputs(paths):
    """Every local input exists (hub ids are left to the loaders)."""
    for path, what in paths:
        hub_id = path.count('/') == 1 and not path.startswith(('.', '/', 'out/'))
        if path and not hub_id and not os.path.exists(path):
            raise FileNotFoundError(f'{path}: {what} not found')


def main():
    t0 = time.time()
    rank, world, _, device = setup_dist(device_type, timeout_s=dist_timeout_s)
    check_inputs(((compressor_ckpt, 'compressor checkpoint'), (base_ckpt, 'base model checkpoint'),
                  (pool_path, 'SFT question pool'), (teacher_path, 'teacher budgets (teacher_path)')))
    items, teacher = load_items(pool_path, max_questions, teacher_path)
    print0(f"build: {'POLICY warm-up items from ' + teacher_path if teacher_path else 'mixed-ratio set only'}")
    # ---- every rank samples its share of the pool, in batches the memory plan allows
    base = Qwen3.from_pretrained(base_ckpt, device=device)
    rtok = load_tokenizer(base_ckpt)
    limit = memplan.device_bytes(device)
    prompt_len = evaluate.longest_prompt(rtok, {'pool': items}, ['none'])
    rows_at_once, plan = evaluate.fit_batch_size(base.config, min(sample_batch_size, chunk_questions * n_samples),
                                                 prompt_len, max_new_tokens, top_p,
                                                 str(base.model.embed_tokens.weight.dtype).split('.')[-1], n_samples,
                                                 limit)
    memplan.check(plan, limit, f'build_sft_data sampling ({rows_at_once} rows at once)', print_fn=print0)
    samples = sample_base_answers(base, rtok, items, samples_cache_path, base_ckpt, n_samples=n_samples,
                                  temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                                  batch_size=rows_at_once, chunk_questions=chunk_questions, rank=rank, world=world,
                                  cuda_graph=cuda_graph)
    if fallback_gold_cots:
        samples += gold_cot_samples(items, samples, rtok)
    del base
    t1 = time.time()
    # ---- every rank compresses its share of the CoTs; rank 0 writes the records
    model, tok = load_compressor(compressor_ckpt, device)
    records, stats = build_sft_records(
        model, tok, samples, rtok, teacher, compress_ratios=compress_ratios, bucket_tol=bucket_tol,
        min_cot_tokens=min_cot_tokens, max_ngram_repeats=max_ngram_repeats, compress_batch_size=compress_batch_size,
        seed=seed, replay_fraction=replay_fraction, warmup_fraction=warmup_fraction, warmup_mix=warmup_mix,
        rank=rank, world=world, parts_path=out_path + '.compressed')
    if not records:
        raise SystemExit(f"build: no usable records ({stats}); the base model at {base_ckpt} answered "
                         f"no question correctly with a closed think, or every question missed a bucket")
    if is_main():
        write_jsonl(out_path, records)
        print0(f"build: {stats} -> {len(records)} records in {out_path} "
               f"(sampling {t1 - t0:.1f}s, compressing {time.time() - t1:.1f}s)")
        print_bucket_table(records)
    barrier()
    cleanup_dist()


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
