"""
Evaluation: the sample-and-grade engine every stage uses, and the CLI that runs checkpoints x
modes x benchmarks and writes the metrics (metrics.py) and the report (report.py: table in the
paper's layout + accuracy-vs-ratio plot).

    python evaluate.py config/eval_tiny.py                       # embedded default, CPU
    torchrun --standalone --nproc_per_node=8 evaluate.py config/eval_qwen3_1p7b.py
    python evaluate.py config/eval_tiny.py --benchmarks="['synthetic']" --max_items=50

The engine (imported by build_sft_data.py and train_chrpo.py):

    from evaluate import sample_and_grade
    rows = sample_and_grade(model, tok, items, mode='0.4', n=4, temperature=0.7)
    # one dict per (item, sample), in item order: id, question, gold, difficulty, mode,
    # sample_index, prompt_ids, tokens, logprobs, finish_reason, output, parsed, pred,
    # correct, think_tokens, budget, latency_s

Grading (`grade`): a sample is correct only if it stopped on a stop token (truncated =
wrong), its think block is closed, and the last \\boxed{} of the answer part is equivalent
to the gold answer (grading.is_equiv; model text is never eval'd). think_tokens counts the
tokens inside a closed <think>..</think> (None when unclosed). budget = the budget mode the
answer runs under: the mode itself for fixed modes, the first generated budget token for
'auto' (POLICY), None for 'none' / 'base'.

Timing: sample_and_grade puts latency_s = (wall time of the sampler call) / (number of
samples) on each row, i.e. the amortized per-sample latency of batched decoding. The
paper's "latency per instance" is the sum of latency_s over a row's samples / #questions.

Metrics per (benchmark, model, mode): metrics.summarize (accuracy with 95% intervals, think
tokens, ActRatio, budget following and its floor, pass@k).

Outputs in out_dir: samples_{model}_{mode}_{benchmark}.jsonl (one line per sample),
summary.json (a list of rows), report.md (+ report_path if set) and accuracy_vs_ratio.png
(both written by report.py); with write_summary=False only the samples files (a run that
evaluates some rows early, beside other work, for a later run to reuse and summarize).
Resumable: a finished samples file whose run key matches the current settings is reused;
an unfinished pair resumes from its per-rank .partial files (chunks of `chunk_items`).
Distributed: rank r takes items[r::world] (`shard`); rank 0 merges the per-rank files.
The chunked, resumable sampling (`finished_questions`, `sample_in_chunks`) is the one
such cache of the project: the teacher budgets (train_chrpo.py) and the base model's answers
(build_sft_data.py) use it too.
Memory: per model, the decode batch is the largest (up to batch_size) whose memory plan
(memplan.eval_plan at the longest prompt, kv_cache_gib if set) fits the GPU; the plan is
printed, and a model that does not fit even one row stops with the keys to change.
"""
import hashlib
import json
import os
import re
import time

import torch

import memplan
import sampler
from benchmarks import load_benchmark
from common import (append_jsonl, atomic_write_json, atomic_write_text, barrier, checkpoint_digest, cleanup_dist,
                    find_checkpoint, is_hub_id, is_main, print0, read_jsonl, read_jsonl_tolerant, setup_dist,
                    write_jsonl)
from data import FIXED_MODES, SYSTEM_PROMPT, budget_name, mode_name, parse_response, render_prompt, shown_mode
from grading import extract_answer, find_boxed, is_equiv
from metrics import summarize
from model import Qwen3
from report import write_report
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# config (embedded default; config/eval_*.py override)
out_dir = 'out/eval'  # per-sample jsonl, summary.json, report.md, plot
models = {'base': 'out/base/ckpt', 'sft': 'out/sft/ckpt', 'chrpo': 'out/chrpo/ckpt'}  # name -> checkpoint
model_modes = {'base': ['base'],  # name -> modes to evaluate ('base'/'none', '0.2'..'1.0', 'auto')
               'sft': ['base'] + FIXED_MODES + ['auto'],
               'chrpo': ['auto'] + FIXED_MODES}
optional_models = []  # names whose missing checkpoint is skipped with a message (others: error)
only_models = []  # non-empty: evaluate just these names of models (with their model_modes), the rest untouched
tokenizer_path = ''  # '' = the tokenizer saved in each checkpoint folder
benchmarks = ['synthetic']  # 'synthetic', 'gsm8k', 'math500', 'amc23', a local jsonl, or a hub id
split = 'test'  # benchmark split
data_dir = 'out/data'  # where 'synthetic' reads {split}.jsonl (python corpus.py)
max_items = 0  # >0: first max_items questions of each benchmark (quick runs)
n_samples = 1  # samples per question (paper: 1); pass@k is reported when > 1
temperature = 0.7  # paper decoding
top_p = 0.9  # paper decoding
top_k = 0  # 0 = off
max_new_tokens = 512  # paper: 4096
batch_size = 64  # sequences decoded together (sampler batch_size), at most: capped by the memory plan
kv_cache_gib = 0.0  # > 0: also cap the decode batch so its KV cache fits this many GiB (0 = the device decides)
chunk_items = 64  # questions per resumable chunk (appended to the .partial file when done)
seed = 1234  # sampling seed (chunk seed = seed + index of its first question)
device = 'auto'  # 'auto' | 'cpu' | 'cuda'
param_dtype = 'auto'  # weights: 'auto' (bf16 on cuda, fp32 on cpu) | 'float32' | 'bfloat16' | 'float16'
cuda_graph = False  # sampler: CUDA-graph decode (GPU only)
dist_timeout_s = 4 * 3600  # process-group timeout: ranks wait at barriers while the others finish their shards
reference_model = 'base'  # ActRatio denominator: this model's 'base' row
reference_samples = 0  # > n_samples: samples a question for the reference model's rows (r's denominator is their
                       # mean, so its sampling noise shrinks as 1/sqrt(reference_samples)); 0 = n_samples
paired_with = {}  # name -> the model its rows are compared with at the same mode (paired; the --paper tables)
report_path = ''  # extra copy of report.md (speedrun: out/report.md)
plot = True  # write accuracy_vs_ratio.png when matplotlib is importable
write_summary = True  # False: sample and grade into the samples files only (a later run reads them and writes
                      # summary.json and the report; speedrun --paper evaluates the baseline's rows in its lane)

# -----------------------------------------------------------------------------
# grading

def grade(tok, tokens, finish_reason, gold, mode):
    """Grade one generated continuation (the ids after the prompt). Returns a dict with
    output, parsed, pred, correct, think_tokens, budget (see the module docstring)."""
    mode = mode_name(mode)
    tokens = [int(t) for t in tokens]
    parsed = parse_response(tok, tokens)
    answer_part = parsed.get('answer_text') or ''
    pred = extract_answer(answer_part)
    # extract_answer falls back to 'The answer is ..' without a box; the paper
    # counts an unboxed answer as wrong, so correctness also requires a \\boxed{}
    boxed = bool(find_boxed(answer_part))
    think_closed = bool(parsed.get('think_closed'))
    correct = (pred is not None and boxed and finish_reason == 'stop' and think_closed
               and bool(is_equiv(pred, gold)))
    if mode == 'auto':
        # POLICY: the control head is the first generated token (parse_response's budget)
        budget = budget_name(parsed['budget'])
    elif mode == 'none':
        budget = None
    else:
        budget = mode
    return {'output': tok.decode(tokens), 'parsed': parsed, 'pred': pred, 'boxed': boxed, 'correct': correct,
            'think_tokens': parsed.get('think_tokens') if think_closed else None, 'budget': budget}


# -----------------------------------------------------------------------------
# the engine


def build_prompts(tok, items, mode):
    """Prompt ids of every item in `mode`, rendered as every stage renders them (data.render_prompt,
    its one system-turn policy data.SYSTEM_PROMPT)."""
    mode = mode_name(mode)
    prompts = []
    for i, it in enumerate(items):
        if 'question' not in it:
            raise KeyError(f"item {i} (id {it.get('id')!r}) has no 'question'")
        prompts.append(tok.encode(render_prompt(it['question'], mode)))
    return prompts


@torch.no_grad()
def sample_and_grade(model, tok, items, mode, n=1, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=512,
                     seed=0, batch_size=None, **sampler_kw):
    """Sample n continuations per item in `mode` and grade each. items: dicts with 'id',
    'question', 'answer' (gold), optional 'difficulty'. Returns len(items)*n dicts in item
    order (samples of one item together), each with latency_s (see module docstring).
    sampler_kw go to sampler.generate as is (cuda_graph=True, compile=True on GPU)."""
    mode = mode_name(mode)  # rows carry data.MODES names ('none', not 'base')
    if not items:
        return []
    for i, it in enumerate(items):
        if 'answer' not in it:
            raise KeyError(f"item {i} (id {it.get('id')!r}) has no 'answer' (gold)")
    prompts = build_prompts(tok, items, mode)
    was_training = model.training
    model.eval()
    t0 = time.time()
    outs = sampler.generate(model, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, top_k=top_k, stop_token_ids=tuple(tok.stop_ids), seed=seed,
                            batch_size=batch_size, **sampler_kw)
    wall = time.time() - t0
    model.train(was_training)
    if len(outs) != len(items) * n:
        raise RuntimeError(f'sampler returned {len(outs)} samples, expected {len(items)} x {n}')
    rows = []
    per_sample = wall / len(outs)
    for j, o in enumerate(outs):
        it = items[o['prompt_index']]
        tokens = [int(t) for t in o['tokens']]
        g = grade(tok, tokens, o['finish_reason'], it['answer'], mode)
        rows.append({'id': it.get('id', o['prompt_index']), 'question': it['question'], 'gold': it['answer'],
                     'difficulty': it.get('difficulty'), 'mode': mode, 'sample_index': j % n,
                     'prompt_ids': prompts[o['prompt_index']], 'tokens': tokens,
                     'logprobs': [float(x) for x in o['logprobs']], 'finish_reason': o['finish_reason'],
                     **g, 'latency_s': per_sample})
    return rows


# -----------------------------------------------------------------------------
# resumable chunked sampling: the one cache around the engine (evaluation's per-rank
# .partial files, the teacher budgets, the SFT build's base-model answers). A cache is a
# jsonl file with one writer, holding rows_per_item rows per question, appended a chunk
# of questions at a time.


def finished_questions(path, rows_per_item, key=None):
    """Resume state of a cache file: {question id: its rows} for the questions that have all
    rows_per_item rows of run `key` (key None: every row counts; else rows carry 'run_key').
    A line torn by a kill is not read (and the next append_jsonl cuts it off); a torn chunk (a
    question with fewer rows) is dropped and the file rewritten clean; a file with no row of
    this run is removed."""
    prior = [r for r in read_jsonl_tolerant(path) if key is None or r.get('run_key') == key]
    finished = {}
    for r in prior:
        finished.setdefault(str(r['id']), []).append(r)
    finished = {k: v for k, v in finished.items() if len(v) == rows_per_item}
    if prior and len(prior) != sum(len(v) for v in finished.values()):  # drop a torn chunk, rewrite clean
        write_jsonl(path, [r for v in finished.values() for r in v])
    elif not prior and os.path.exists(path):
        os.remove(path)
    return finished


def sample_in_chunks(todo, chunk_items, sample_chunk, cache_path=None, label='sampling'):
    """The rows of the questions `todo` (indices into the caller's items), chunk_items at a
    time (0: all at once): sample_chunk(chunk) returns the rows of the indices in chunk. With
    cache_path each chunk's rows are appended to it in one write, so a kill loses at most the
    chunk in flight and finished_questions resumes from the rest. Seeds are sample_chunk's:
    seeded from chunk[0], the index of the chunk's first question, a resumed run samples
    exactly what an uninterrupted one would have (finished chunks are whole)."""
    rows, t0 = [], time.time()
    step = chunk_items or max(len(todo), 1)
    for c in range(0, len(todo), step):
        chunk_rows = sample_chunk(todo[c:c + step])
        if cache_path:
            append_jsonl(cache_path, *chunk_rows)
        rows += chunk_rows
        print0(f'{label}: {min(c + step, len(todo))}/{len(todo)} questions, {time.time() - t0:.1f}s')
    return rows


# -----------------------------------------------------------------------------
# the CLI: checkpoints x modes x benchmarks, resumable, sharded over ranks

SAVED_KEYS = ['id', 'question', 'gold', 'difficulty', 'mode', 'sample_index', 'prompt', 'output', 'pred',
              'correct', 'think_tokens', 'budget', 'finish_reason', 'n_tokens', 'tokens', 'latency_s']


def bench_slug(name):
    """A file-name-safe benchmark name ('data/gsm8k_test.jsonl' -> 'gsm8k_test')."""
    base = os.path.splitext(os.path.basename(name.rstrip('/')))[0] if os.path.exists(name) else name
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', base).strip('_') or 'bench'


def samples_path(out_dir, model_name, mode, bench):
    return os.path.join(out_dir, f'samples_{model_name}_{shown_mode(mode)}_{bench_slug(bench)}.jsonl')


def run_key(ckpt, bench, mode, items, settings):
    """Hash of everything that decides a (model, mode, benchmark) file's content: reuse a
    file only when it matches (a changed max_new_tokens, or other weights, even at the same
    path, recompute; common.checkpoint_digest)."""
    ident = json.dumps([checkpoint_digest(ckpt), bench, mode_name(mode),
                        [str(it['id']) for it in items], settings], sort_keys=True)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def _to_saved(tok, row, key):
    out = {k: row.get(k) for k in SAVED_KEYS if k in row}
    out['prompt'] = tok.decode(row['prompt_ids'])
    out['n_tokens'] = len(row['tokens'])
    out['mode'] = shown_mode(row['mode'])
    out['run_key'] = key
    return out


def load_complete(path, key, n_expected):
    """The rows of a finished samples file for this run key, else None."""
    if not os.path.exists(path):
        return None
    rows = read_jsonl(path)
    if len(rows) != n_expected or any(r.get('run_key') != key for r in rows):
        return None
    return rows


def merge_partials(path, key, items, n, world):
    """Rank 0: every rank's .partial rows of this run, n per question in item order, written
    to `path`; the .partial files are removed."""
    merged = {}
    for r_ in range(world):
        for r in read_jsonl_tolerant(f'{path}.rank{r_}of{world}.partial'):
            if r.get('run_key') == key:
                merged.setdefault(str(r['id']), []).append(r)
    rows = []
    for it in items:
        got = merged.get(str(it['id']), [])
        if len(got) < n:
            raise RuntimeError(f'{path}: question {it["id"]!r} has {len(got)} of {n} samples after merging')
        rows += sorted(got, key=lambda r: r['sample_index'])[:n]
    write_jsonl(path, rows)
    for r_ in range(world):
        p = f'{path}.rank{r_}of{world}.partial'
        if os.path.exists(p):
            os.remove(p)
    return rows


def shard(n, rank, world):
    """The indices of 0..n-1 that `rank` of `world` samples: every world-th from rank (strided,
    so a sorted list spreads evenly). The ranks cover every index exactly once."""
    return list(range(rank, n, world))


def evaluate_pair(model, tok, ckpt, model_name, mode, bench, items, rank, world, settings, *, out_dir, chunk_items,
                  batch_size, cuda_graph=False):
    """Sample and grade one (model, mode, benchmark), resumable. settings: the sampling settings
    that decide the samples (n, temperature, top_p, top_k, max_new_tokens, seed, and the system
    turn data.SYSTEM_PROMPT; hashed into the run key); chunk_items questions are appended to this
    rank's .partial file at a time; batch_size and cuda_graph go to the sampler. Returns all rows
    on rank 0 (None on other ranks)."""
    n = settings['n']
    path = samples_path(out_dir, model_name, mode, bench)
    key = run_key(ckpt, bench, mode, items, settings)
    done = load_complete(path, key, len(items) * n)
    if done is not None:
        print0(f'[{bench}] {model_name} / {mode}: reusing {path}')
        return done
    os.makedirs(out_dir, exist_ok=True)
    part = f'{path}.rank{rank}of{world}.partial'
    finished = finished_questions(part, n, key)
    index = shard(len(items), rank, world)
    todo = [i for i in index if str(items[i]['id']) not in finished]

    def sample_chunk(chunk):
        rows = sample_and_grade(model, tok, [items[i] for i in chunk], mode, n=n, temperature=settings['temperature'],
                                top_p=settings['top_p'], top_k=settings['top_k'],
                                max_new_tokens=settings['max_new_tokens'], seed=settings['seed'] + chunk[0],
                                batch_size=batch_size,
                                **({'cuda_graph': True} if cuda_graph else {}))
        return [_to_saved(tok, r, key) for r in rows]
    sample_in_chunks(todo, chunk_items, sample_chunk, part, f'[{bench}] {model_name} / {mode} (rank 0)')
    barrier()
    if not is_main():
        barrier()
        return None
    rows = merge_partials(path, key, items, n, world)
    barrier()
    return rows


def fit_batch_size(cfg, batch_size, prompt_len, max_new_tokens, top_p, dtype, n_samples, device_limit,
                   kv_cache_gib=0.0):
    """(rows, plan): the largest decode batch <= batch_size whose memory plan (memplan.eval_plan:
    weights, KV cache rows x (prompt_len + max_new_tokens) x 2 x layers x kv_heads x head_dim x
    dtype bytes, logits and sampling temporaries, prefill) fits device_limit bytes (None: no
    device to fit, CPU) and whose KV cache fits kv_cache_gib (0: no cap of its own); 1 row when
    nothing fits (memplan.check then refuses, naming the keys)."""
    def fits(rows):
        plan = memplan.eval_plan(cfg, rows, prompt_len, max_new_tokens, top_p, dtype, n_samples)
        kv = sum(r['bytes'] for r in plan['evaluation'] if r['what'].startswith('KV cache'))
        total = sum(r['bytes'] for r in plan['evaluation'])
        ok = (device_limit is None or total <= device_limit) and (kv_cache_gib <= 0 or kv <= kv_cache_gib * memplan.GiB)
        return ok, plan

    lo, hi = 1, batch_size  # the plan grows with rows: bisect for the last that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid)[0] else (lo, mid - 1)
    return lo, fits(lo)[1]


def longest_prompt(tok, bench_items, modes):
    """Tokens in the longest prompt any (benchmark, mode) pair of a model renders."""
    return max((len(p) for items in bench_items.values() for md in modes if items
                for p in build_prompts(tok, items, md)), default=1)


def resolve_checkpoint(name, path):
    """A checkpoint folder (config.json inside), or an out_dir holding ckpt/; else None."""
    if os.path.isfile(os.path.join(path, 'config.json')):
        return path
    found = find_checkpoint(path)
    if found:
        return found
    parent = os.path.dirname(path.rstrip('/'))
    if os.path.basename(path.rstrip('/')) == 'ckpt' and parent:
        return find_checkpoint(parent)  # killed between the renames: ckpt.old
    if is_hub_id(path):
        return path  # 'Qwen/Qwen3-1.7B', resolved by model.from_pretrained
    return None


def load_benchmarks(benchmarks, split, data_dir, max_items):
    """{benchmark name: its questions}, the first max_items of each when max_items > 0."""
    bench_items = {}
    for b in benchmarks:
        items = load_benchmark(b, split=split, data_dir=data_dir)
        bench_items[b] = items[:max_items] if max_items > 0 else items
        print0(f'benchmark {b}: {len(bench_items[b])} questions')
    return bench_items


def write_outputs(results, out_dir, reference_model, plot, report_path, paired_with=None):
    """summary.json, report.md (+ the plot) in out_dir, and a copy of the report at report_path
    whose image link points back into out_dir. Returns the report text."""
    summary = summarize(results, reference_model=reference_model, paired_with=paired_with)
    atomic_write_json(os.path.join(out_dir, 'summary.json'), summary)
    plot_path = os.path.join(out_dir, 'accuracy_vs_ratio.png')
    report = write_report(summary, os.path.join(out_dir, 'report.md'), plot_path=plot_path if plot else None)
    if report_path:
        rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(report_path)))
        atomic_write_text(report_path, report.replace('](accuracy_vs_ratio.png)', '](' + rel + ')'))
    return report


def main():
    rank, world, local_rank, dev = setup_dist(device, timeout_s=dist_timeout_s)
    torch_dtype = {'auto': torch.bfloat16 if dev.type == 'cuda' else torch.float32,
                   'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[param_dtype]
    unknown = [m for m in [*model_modes, *paired_with, *paired_with.values(), *only_models] if m not in models]
    if unknown:
        raise SystemExit(f'model_modes, paired_with or only_models names {unknown} that are not in models '
                         f'{list(models)}')
    base_settings = {'n': n_samples, 'temperature': temperature, 'top_p': top_p, 'top_k': top_k,
                'max_new_tokens': max_new_tokens, 'seed': seed, 'system': SYSTEM_PROMPT}
    bench_items = load_benchmarks(benchmarks, split, data_dir, max_items)
    results = {}
    for name, path in models.items():
        if only_models and name not in only_models:
            continue
        modes = model_modes.get(name, ['base'])
        for md in modes:
            mode_name(md)  # a typo in a mode fails before any sampling
        n = max(n_samples, reference_samples) if name == reference_model else n_samples
        settings = dict(base_settings, n=n)
        ckpt = resolve_checkpoint(name, path)
        if ckpt is None:
            if name in optional_models:
                print0(f'model {name}: no checkpoint at {path}, skipped (optional_models)')
                continue
            raise SystemExit(f"model {name}: no checkpoint at {path} (expected an HF folder with config.json "
                             f"or an out_dir with a complete ckpt/). Train it first, or list '{name}' in "
                             f"optional_models to skip it.")
        tok = load_tokenizer(tokenizer_path or ckpt)
        model = Qwen3.from_pretrained(ckpt, dtype=torch_dtype, device=dev)
        model.eval()
        print0(f'model {name}: {ckpt} ({model.num_params() / 1e6:.2f}M params), modes {modes}')
        # the decode batch from the memory plan (per GPU: every rank decodes its own batches)
        limit, prompt_len = memplan.device_bytes(dev), longest_prompt(tok, bench_items, modes)
        rows_at_once, plan = fit_batch_size(model.config, min(batch_size, chunk_items * n), prompt_len,
                                            max_new_tokens, top_p, str(torch_dtype).split('.')[-1], n,
                                            limit, kv_cache_gib)
        memplan.check(plan, limit, f'evaluate {name} ({rows_at_once} rows decoded at once, prompts up to '
                      f'{prompt_len} tokens)', print_fn=print0)
        for b, items in bench_items.items():
            for md in modes:
                rows = evaluate_pair(model, tok, ckpt, name, md, b, items, rank, world, settings, out_dir=out_dir,
                                     chunk_items=chunk_items, batch_size=rows_at_once, cuda_graph=cuda_graph)
                if rows is not None:
                    results[(b, name, md)] = rows
        del model
    if is_main() and write_summary:
        print0(write_outputs(results, out_dir, reference_model, plot, report_path, paired_with))
    barrier()
    cleanup_dist()


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
