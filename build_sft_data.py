"""
Stage 2 data of Extra-CoT: the mixed-ratio SFT set, built by compressing the base model's
own correct CoTs with the trained compressor; and, once CHRPO's teacher has labelled the RL
questions with budgets g*, the POLICY warm-up set.

    python build_sft_data.py config/tiny_sft_data.py                             # -> out/data/sft_mixed.jsonl
    python build_sft_data.py config/tiny_sft_data.py config/tiny_policy_data.py  # -> out/data/sft_policy.jsonl
    python build_sft_data.py config/qwen3_1p7b_sft_data.py                       # paper scale (GPU)

The mixed-ratio set (the Extra-CoT paper, Stage 2): the base model answers the SFT pool
(evaluate.sample_and_grade, mode 'none'); only correct answers with a closed <think> are kept;
each own CoT is compressed at compress_ratios (0.1..0.9) and re-bucketed by realized ratio to
the nearest of {0.2,0.4,0.6,0.8} within +-bucket_tol (the closest compression wins a bucket);
the original forms 1.0 (half the questions get mode '1.0', half 'none', as in the paper); only
questions present in every bucket survive; degenerate CoTs (too few tokens, or a loop as
rewards.is_degenerate defines it for CHRPO's rollouts) are dropped and counted.

The POLICY warm-up set (teacher_path set: the teacher budgets train_chrpo.py --stage=teacher
wrote): mode 'auto' items answered with chosen = g* (all-fail questions: '1.0') and the CoT
compressed at g*, warmup_fraction of the fixed-mode records in number, mixed as in the paper
(0.2:18% 0.4:24% 0.6:26% 0.8:22% 1.0:10%; warmup_mix='paper') or as the labels come
('natural'), beside replay_fraction of the fixed-mode records.

The TokenSkip-style baseline (compressor_kind = 'tokenskip', config/tiny_tokenskip_data.py):
the same build from the same cached base answers, but each CoT is compressed by tokenskip.py's
question-agnostic surprisal score under base_ckpt instead of the trained compressor.

The base model's graded answers are cached per question (samples_cache_path, the resumable
cache of evaluate.sample_in_chunks), so the warm-up build only samples the teacher's questions
that the first build did not see. Output is written atomically.

Distributed (torchrun --nproc_per_node=N build_sft_data.py ...): every rank answers its share
of the uncached questions (evaluate.shard, as evaluation splits a benchmark), in batches of
sample_batch_size rows, into its own part of the cache, which rank 0 merges; rank 0 then
compresses and writes while the others wait (dist_timeout_s bounds that wait).
"""
import json
import os
import random
import time
from functools import partial

from common import (append_jsonl, barrier, checkpoint_digest, cleanup_dist, is_hub_id, is_main, print0, read_jsonl,
                    setup_dist, write_jsonl)
from compressor import compress_batch, load_compressor
from data import BUDGETS, answer_text, budget_name, mode_name, parse_response, render_completion
from evaluate import finished_questions, sample_and_grade, sample_in_chunks, shard
from model import Qwen3
from rewards import is_degenerate
from tokenizer import load_tokenizer
import tokenskip

# -----------------------------------------------------------------------------
# config (module globals; configurator.py overrides them from a config file / --key=value)
compressor_ckpt = 'out/compressor/ckpt'  # the trained compressor (train_compressor.py)
compressor_kind = 'question_aware'  # or 'tokenskip': the baseline (tokenskip.py, scored by base_ckpt)
base_ckpt = 'out/base/ckpt'         # the reasoning model whose own CoTs are compressed
pool_path = 'out/data/sft_pool.jsonl'  # questions the base model answers
out_path = 'out/data/sft_mixed.jsonl'  # the SFT records written
samples_cache_path = 'out/sft_data/base_samples.jsonl'  # the base model's graded answers, reused by later builds
max_questions = 0                   # 0 = the whole pool
n_samples = 1                       # samples per question (the first correct one is used)
temperature = 0.7                   # sampling temperature for the own CoTs
top_p = 0.9                         # nucleus sampling
max_new_tokens = 512                # generation cap (truncated outputs are wrong)
seed = 1234                         # sampling seed (a chunk's: seed + index of its first question), and every shuffle's
chunk_items = 0                     # questions sampled and cached at a time (0 = all at once; a kill loses the chunk)
compress_ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # ratios each CoT is compressed at
bucket_tol = 0.05                   # realized ratio must be within this of a bucket
min_cot_tokens = 4                  # fewer reasoning tokens than this = degenerate (too short)
compress_batch_size = 16            # CoTs per forward pass when compressing
support_max_score = 3.0             # ours: words scoring in (0, this] (keep minus drop logit) are support (restated
                                    # actions, trained to p = support_label 0.7, logit 0.85; key tokens to p -> 1,
                                    # logits ~7) and enter a compression as whole clauses (compressor.group_drop_runs);
                                    # None = word by word
sample_batch_size = 64              # rows decoded at once (the whole pool in one batch does not fit at paper scale)
cuda_graph = True                   # CUDA: graph-captured decode (no effect on CPU)
dist_timeout_s = 4 * 3600           # process-group timeout: rank 0 builds while the others wait at a barrier
fallback_gold_cots = False          # smoke runs only: corpus CoTs stand in for questions the base model missed
device_type = 'auto'                # 'auto', 'cpu' or 'cuda'
# the POLICY warm-up set
teacher_path = ''                   # '' = the mixed-ratio set only; a teacher budgets jsonl = add POLICY warm-up items
warmup_fraction = 0.2               # POLICY warm-up items, as a share of the fixed-mode records
warmup_mix = 'paper'                # 'paper': cap each budget at the paper's warm-up share; 'natural': the label distribution
replay_fraction = 1.0               # with teacher budgets: share of the fixed-mode records kept beside the warm-up items
# replay of the base model's own training corpus
corpus_path = ''                    # the corpus the base model learned from (corpus.py's train.jsonl); '' = no replay
corpus_replay_share = 0.0           # share of the written set that is corpus records replayed in mode 'none'

BUCKETS = BUDGETS[:-1]              # re-bucketing targets 0.2..0.8 (1.0 = the original)
POLICY_MIX = {'0.2': 0.18, '0.4': 0.24, '0.6': 0.26, '0.8': 0.22, '1.0': 0.10}  # the paper's warm-up mix


# -----------------------------------------------------------------------------
# own CoTs, re-bucketing

def degenerate_cot(rtok, text, min_tokens):
    """Too short (fewer than min_tokens reasoning tokens), or a loop by rewards.is_degenerate:
    the definition CHRPO's integrity check applies to rollouts, so SFT never trains on a CoT
    that RL would call invalid. (It replaced a count rule here, "some 4-gram seen more than 6
    times", which grows with length: a long correct CoT repeats its phrasing once per step,
    "... more apples, so 12 + 7 = 19", without being a loop. is_degenerate asks what a loop
    is: text that is mostly a copy of itself, or a tail that repeats one block.)"""
    ids = rtok.encode(text)
    return len(ids) < min_tokens or is_degenerate(ids)


def rebucket(rows, tol):
    """bucket -> the compression whose realized ratio is nearest to it, within tol."""
    best = {}
    for r in rows:
        b = min(BUCKETS, key=lambda b: abs(r['realized_ratio'] - b))
        d = abs(r['realized_ratio'] - b)
        if d <= tol + 1e-9 and (b not in best or d < abs(best[b]['realized_ratio'] - b)):
            best[b] = r
    return best


def usable_cots(samples, rtok, min_cot_tokens, stats):
    """id -> (question, gold, cot, difficulty): each question's first correct, closed, non-degenerate CoT."""
    cots = {}
    for s in samples:
        if not s.get('correct') or s['id'] in cots:
            continue
        stats['correct'] += 1
        cot = parse_response(rtok, s['tokens'])['think_text']  # the sample's own CoT (None: think not closed)
        if not cot:
            continue
        if degenerate_cot(rtok, cot, min_cot_tokens):
            stats['degenerate'] += 1
            continue
        cots[s['id']] = (s['question'], s['gold'], cot, s.get('difficulty'))
    return cots


# -----------------------------------------------------------------------------
# records

def fixed_mode_records(cots, comp, rtok, bucket_tol, min_cot_tokens, rng, stats):
    """Per question present in every bucket: one record per bucket 0.2..0.8 and the original
    (ratio 1.0), which carries <COMP_100> for half the questions and no budget token for the
    other half (the paper's split)."""
    records, full_ids = [], []
    for qid in cots:
        q, gold, cot, _ = cots[qid]
        ok = [r for r in comp[qid] if not degenerate_cot(rtok, r['text'], min_cot_tokens)]
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
        chosen = budget_name(t.get('g_star')) or '1.0'  # all-fail questions (g* None) warm up at 1.0
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


def build_sft_records(model, tok, samples, rtok, teacher, *, compress_ratios, bucket_tol, min_cot_tokens,
                      compress_batch_size, seed, replay_fraction, warmup_fraction, warmup_mix, compress=compress_batch):
    """SFT records from graded samples (evaluate.sample_and_grade rows): the fixed-mode records,
    plus POLICY warm-up items when teacher budget rows are given. compress: compressor.compress_batch
    (ours) or tokenskip.compress_batch (the baseline), with (model, tok) its scorer. Returns (records, stats)."""
    stats = {'samples': len(samples), 'correct': 0, 'degenerate': 0, 'missing_bucket': 0, 'questions': 0}
    cots = usable_cots(samples, rtok, min_cot_tokens, stats)
    ids = list(cots)
    comp = dict(zip(ids, compress(model, tok, [(cots[i][0], cots[i][2]) for i in ids], compress_ratios, rtok,
                                  batch_size=compress_batch_size)))
    rng = random.Random(seed)
    records = fixed_mode_records(cots, comp, rtok, bucket_tol, min_cot_tokens, rng, stats)
    if teacher:
        if replay_fraction < 1.0:  # a warm-up round keeps only this share of the fixed-mode records
            rng.shuffle(records)
            records = records[:round(replay_fraction * len(records))]
        warm = policy_warmup_records(cots, comp, teacher, len(records), rng, warmup_fraction, warmup_mix)
        stats['warmup'] = len(warm)
        records += warm
    rng.shuffle(records)
    return records, stats


def corpus_replay_records(corpus, n_built, share, seed):
    """`share` of the final set as records of the base model's training corpus, mode 'none' with
    the corpus's own CoT: n = n_built * share / (1 - share) of them, drawn without replacement.
    Why: SFT on compressed own CoTs alone moved the full-length mode away from what the base
    learned (sft 1.0 fell 4-6 points below base on the embedded default); replaying the corpus
    keeps that skill while the budget modes are learned (README, "Choices and deviations")."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f'corpus_replay_share={share}: must be in [0, 1)')
    n = min(len(corpus), round(n_built * share / (1.0 - share)))
    rows = random.Random(seed).sample(corpus, n)
    return [{'id': r['id'], 'question': r['question'], 'cot': r['cot'], 'answer': r['answer'], 'mode': 'none',
             'realized_ratio': 1.0, 'source': 'corpus'} for r in rows]


def print_bucket_table(records):
    print0('mode   | count | mean realized ratio')
    groups = {}
    for r in records:
        key = 'corpus' if r.get('source') == 'corpus' else r['mode'] if r['mode'] != 'auto' else f"auto/{r['chosen']}"
        groups.setdefault(key, []).append(r['realized_ratio'])
    for key in sorted(groups):
        v = groups[key]
        print0(f'{key:6s} | {len(v):5d} | {sum(v) / len(v):.3f}')


# -----------------------------------------------------------------------------
# the base model's answers

def sample_base_answers(base, rtok, items, cache_path, base_ckpt, *, n_samples, temperature, top_p, max_new_tokens,
                        seed, chunk_items, batch_size, cuda_graph=False, rank=0, world=1):
    """Graded samples of the base model for every item, in item order, on every rank: the
    questions cached under this base_ckpt are reused; the rest are split over the ranks as
    evaluation splits a benchmark (evaluate.shard), each rank sampling chunk_items at a time into
    its own part file (the cache itself when world = 1; evaluate.sample_in_chunks), which rank 0
    then appends to the cache. A killed build resumes from the cache and the parts."""
    # the cache's run key: answers of other weights (even at the same path) or settings are not reused
    key = json.dumps([checkpoint_digest(base_ckpt), n_samples, temperature, top_p, max_new_tokens, seed])
    os.makedirs(os.path.dirname(cache_path) or '.', exist_ok=True)
    if rank == 0:
        finished_questions(cache_path, n_samples, key)  # rank 0 alone drops a torn chunk (rewrites the file)
    barrier()
    cached = finished_questions(cache_path, n_samples, key)
    todo = [i for i, it in enumerate(items) if str(it['id']) not in cached]
    part = cache_path if world == 1 else f'{cache_path}.rank{rank}'
    done_here = finished_questions(part, n_samples, key) if world > 1 else {}
    mine = [i for i in (todo[j] for j in shard(len(todo), rank, world)) if str(items[i]['id']) not in done_here]
    print0(f'build: {len(items) - len(todo)} questions answered before (cache), {len(todo)} to sample '
           f'over {world} rank(s)')

    def sample_chunk(chunk):
        rows = sample_and_grade(base, rtok, [items[i] for i in chunk], mode='none', n=n_samples,
                                temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=seed + chunk[0], batch_size=batch_size, cuda_graph=cuda_graph)
        return [dict({k: s[k] for k in ('id', 'question', 'gold', 'difficulty', 'correct', 'tokens')}, run_key=key)
                for s in rows]
    sample_in_chunks(mine, chunk_items, sample_chunk, part, 'build: base model answers (rank 0)')
    barrier()
    if world > 1 and rank == 0:  # the parts join the one cache
        for r in range(world):
            rank_part = f'{cache_path}.rank{r}'
            rows = [row for v in finished_questions(rank_part, n_samples, key).values() for row in v]
            if rows:
                append_jsonl(cache_path, *rows)
            if os.path.exists(rank_part):
                os.remove(rank_part)
    barrier()
    cached = finished_questions(cache_path, n_samples, key)
    return [r for it in items for r in cached[str(it['id'])]]


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


def main():
    t0 = time.time()
    rank, world, _, device = setup_dist(device_type, timeout_s=dist_timeout_s)
    if compressor_kind not in ('question_aware', 'tokenskip'):
        raise SystemExit(f"compressor_kind={compressor_kind!r}: must be 'question_aware' or 'tokenskip'")
    ours = compressor_kind == 'question_aware'  # the baseline scores with base_ckpt, no compressor
    for path, what, hub_ok in ((compressor_ckpt if ours else '', 'compressor checkpoint', True),
                               (corpus_path, 'replay corpus', False),
                               (base_ckpt, 'base model checkpoint', True), (pool_path, 'SFT question pool', False),
                               (teacher_path, 'teacher budgets (teacher_path)', False)):
        if path and not os.path.exists(path) and not (hub_ok and is_hub_id(path)):
            raise FileNotFoundError(f'{path}: {what} not found')
    items = read_jsonl(pool_path)
    if max_questions:
        items = items[:max_questions]
    teacher = read_jsonl(teacher_path) if teacher_path else None
    if teacher:  # the teacher's questions get answered too, for their warm-up items
        known = {it['id'] for it in items}
        items += [{'id': t['id'], 'question': t['question'], 'answer': t['answer']}
                  for t in teacher if t['id'] not in known]
    print0(f"build: {'POLICY warm-up items from ' + teacher_path if teacher_path else 'mixed-ratio set only'}")
    base = Qwen3.from_pretrained(base_ckpt, device=device)  # every rank answers its share of the pool
    rtok = load_tokenizer(base_ckpt)
    samples = sample_base_answers(base, rtok, items, samples_cache_path, base_ckpt, n_samples=n_samples,
                                  temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                                  chunk_items=chunk_items, batch_size=sample_batch_size, cuda_graph=cuda_graph,
                                  rank=rank, world=world)
    del base
    t1 = time.time()
    if is_main():  # compressing and writing are rank 0's; the others wait
        model, tok = load_compressor(compressor_ckpt, device) if ours else tokenskip.load_scorer(base_ckpt, device)
        if fallback_gold_cots:
            samples += gold_cot_samples(items, samples, rtok)
        records, stats = build_sft_records(
            model, tok, samples, rtok, teacher, compress_ratios=compress_ratios, bucket_tol=bucket_tol,
            min_cot_tokens=min_cot_tokens, compress_batch_size=compress_batch_size,
            seed=seed, replay_fraction=replay_fraction, warmup_fraction=warmup_fraction, warmup_mix=warmup_mix,
            compress=partial(compress_batch, support_max=support_max_score) if ours else tokenskip.compress_batch)
        if not records:
            raise SystemExit(f"build: no usable records ({stats}); the base model at {base_ckpt} answered "
                             f"no question correctly with a closed think, or every question missed a bucket")
        if corpus_path and corpus_replay_share > 0:
            replay = corpus_replay_records(read_jsonl(corpus_path), len(records), corpus_replay_share, seed)
            stats['corpus_replay'] = len(replay)
            records += replay
            random.Random(seed + 1).shuffle(records)
        write_jsonl(out_path, records)
        print0(f"build: {stats} -> {len(records)} records in {out_path} "
               f"(sampling {t1 - t0:.1f}s, compressing {time.time() - t1:.1f}s)")
        print_bucket_table(records)
    barrier()
    cleanup_dist()


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
