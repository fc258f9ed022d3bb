"""
Stage 1 of Extra-CoT: the question-aware CoT compressor, and the mixed-ratio SFT set built
with it.

    python train_compressor.py config/tiny_compressor.py                 # train, then build
    python train_compressor.py config/tiny_compressor.py --stage=train   # only train
    python train_compressor.py config/tiny_compressor.py --stage=build   # only build sft_mixed.jsonl
    torchrun --standalone --nproc_per_node=8 train_compressor.py config/qwen3_0p6b_compressor.py

The classifier (model.py's Qwen3 run bidirectionally, `causal=False`, with a 2-label head)
reads  question tokens, <think>, CoT tokens  and predicts keep (1) / drop (0) for every CoT
token. Question tokens are context only (label -100). A CoT token is labelled keep when its
char range (whitespace stripped) overlaps a keep span of the annotated corpus.
Paper scale: the paper's Longformer-large (435M, 4096 tokens) is replaced by Qwen3-0.6B made
bidirectional (same size class, loads with this repo's own model code, 32k positions); its
pretrained causal weights are a warm start for the bidirectional encoder, the head is fresh.

Loss over labelled tokens: cross-entropy, or focal  -(1 - p_t)^gamma * log p_t  (gamma 2).
AdamW, linear warmup (6%) then linear decay to 0, grad clip 1.0, early stopping on the
validation macro-F1 (mean of the keep and drop F1) with `patience` evaluations. Validation
also reports decisive-token survival at 0.2 / 0.4: the share of keep-labelled tokens that
are among the top round(n*g) tokens by keep score.

Compressing at ratio g (`compress`, `compress_batch`): one forward pass, score = keep logit
minus drop logit per CoT token; the selection units are whitespace-delimited words, merged
with formula spans ("24 - 9 = 15", $...$, \\( \\), \\[ \\]) so that a number or an equation
is kept or dropped whole (a digit-by-digit tokenizer would otherwise cut numbers); a formula
scores the mean of its tokens, a plain word its best token ("12." is not sunk by its
period). Where the classifier drops (best token score <= 0), consecutive plain words up to a
clause mark merge into one unit scored by its mean (`group_drop_runs`): once the decisive
words are in, filler is added as whole clauses, never as function words torn out of it. Units are taken best-first while they bring the kept token count closer to
target = round(n*g) (round half up), so |kept - target| <= largest unit / 2.
Kept units stay in their original order; a gap holding a newline stays a newline, any other
gap is one space. The realized ratio is measured in the REASONING model's tokenizer:
len(encode(compressed)) / len(encode(original)).

Build step (`--stage=build`, also run after training with the default stage='all'): the base
model answers out/data/sft_pool.jsonl (evaluate.sample_and_grade, mode 'none'); only correct
answers with a closed <think> are kept; each own CoT is compressed at 0.1..0.9 and re-bucketed
by realized ratio to the nearest of {0.2,0.4,0.6,0.8} within +-0.05 (the closest compression
wins a bucket); the original forms 1.0 (half the questions get mode '1.0', half 'none');
only questions present in every bucket survive; degenerate CoTs (too few tokens, a repeated
n-gram loop) are dropped and counted. POLICY warm-up items (mode 'auto', chosen = g*, or '1.0'
for all-fail) are added when `teacher_budgets_path` exists, mixed about as in the paper
(0.2:18% 0.4:24% 0.6:26% 0.8:22% 1.0:10%). Output: out/data/sft_mixed.jsonl, atomically.
"""
import math
import os
import random
import re
import time

import torch
import torch.nn.functional as F

from common import (all_reduce_sum, atomic_torch_save, barrier, cleanup_dist, find_checkpoint, is_main,
                    load_train_state, print0, read_jsonl, rng_state, save_checkpoint, seed_everything,
                    set_rng_state, setup_dist, write_jsonl, append_jsonl, read_jsonl_tolerant)

# -----------------------------------------------------------------------------
# config: training
out_dir = 'out/compressor'          # checkpoints (ckpt = final best model), best.pt, metrics.jsonl
stage = 'all'                       # 'train', 'build' or 'all' (train, then build)
resume = False                      # continue from {out_dir}/ckpt (same step, optimizer, RNG)
train_path = 'out/data/train.jsonl' # annotated corpus {id, question, cot, answer, keep_spans}
val_path = 'out/data/val.jsonl'     # validation split, same format
tokenizer_path = ''                 # '' -> out/data/tokenizer when init_from='scratch', else init_from
init_from = 'scratch'               # 'scratch' or a Qwen3 folder / hub id (e.g. Qwen/Qwen3-0.6B)
n_layer = 2                         # scratch model: layers
n_embd = 128                        # scratch model: hidden size
n_head = 4                          # scratch model: attention heads (head_dim = n_embd // n_head)
n_kv_head = 2                       # scratch model: key/value heads (GQA)
intermediate_size = 384             # scratch model: SwiGLU width
max_len = 512                       # tokens per example (question + sep + CoT), longer CoTs truncated
max_question_tokens = 128           # the question is cut to this many tokens (CoT gets the rest)
max_train_records = 0               # 0 = all of train_path
max_val_records = 0                 # 0 = all of val_path
batch_size = 16                     # examples per optimizer step per rank
max_iters = 300                     # optimizer steps
learning_rate = 1e-3                # peak AdamW lr
weight_decay = 0.01                 # AdamW weight decay (matrices only)
warmup_frac = 0.06                  # share of max_iters spent warming up linearly, then linear decay
grad_clip = 1.0                     # global grad-norm clip (0 = off)
loss = 'ce'                         # 'ce' or 'focal'
focal_gamma = 2.0                   # focal loss exponent
eval_interval = 50                  # steps between validations (and checkpoints)
patience = 4                        # stop after this many validations without a better macro-F1
seed = 1337                         # init, data order
dtype = 'float32'                   # 'float32' or 'bfloat16' (autocast on CUDA)
device_type = 'auto'                # 'auto', 'cpu' or 'cuda'
# -----------------------------------------------------------------------------
# config: building the mixed-ratio SFT set
base_ckpt = 'out/base/ckpt'         # the reasoning model whose own CoTs are compressed
compressor_ckpt = ''                # '' -> {out_dir}/ckpt
sft_pool_path = 'out/data/sft_pool.jsonl'  # questions the base model answers
sft_mixed_path = 'out/data/sft_mixed.jsonl'  # output
build_max_questions = 0             # 0 = the whole pool
build_n_samples = 1                 # samples per question (the first correct one is used)
build_temperature = 0.7             # sampling temperature for the own CoTs
build_top_p = 0.9                   # nucleus sampling
build_max_new_tokens = 512          # generation cap (truncated outputs are wrong)
build_seed = 1234                   # sampling seed
compress_ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # ratios each CoT is compressed at
bucket_tol = 0.05                   # realized ratio must be within this of a bucket
min_cot_tokens = 4                  # fewer reasoning tokens than this = degenerate
max_ngram_repeats = 6               # a 4-gram seen more often than this = degenerate loop
teacher_budgets_path = 'out/chrpo/teacher_budgets.jsonl'  # CHRPO teacher labels (skipped if absent)
warmup_fraction = 0.2               # POLICY warm-up items, as a share of the fixed-mode records
compress_batch_size = 16            # CoTs per forward pass when compressing
warmup_mix = 'paper'                # 'paper': cap each budget at PAPER.md's warm-up share; 'natural': the label distribution
replay_fraction = 1.0               # with teacher budgets: share of the fixed-mode records kept beside the warm-up items
build_fallback_gold_cots = False    # smoke runs only: corpus CoTs stand in for questions the base model missed

BUCKETS = [0.2, 0.4, 0.6, 0.8]      # re-bucketing targets (1.0 = the original)
POLICY_MIX = {'0.2': 0.18, '0.4': 0.24, '0.6': 0.26, '0.8': 0.22, '1.0': 0.10}  # paper's warm-up mix

# the config = the plain module globals above, as a dict (tests pass their own)
CONFIG_KEYS = [k for k, v in list(globals().items()) if not k.startswith('_') and k.islower()
               and isinstance(v, (int, float, bool, str, list))]


def config_from_globals():
    return {k: globals()[k] for k in CONFIG_KEYS}


# -----------------------------------------------------------------------------
# data: records -> (ids, labels)


def load_annotated(path, limit=0):
    """Corpus records with checked keys and keep spans; errors name file:line and the key."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: annotated corpus not found (run `python data.py`)')
    records = []
    lineno = 0
    for lineno, rec in _jsonl_with_lines(path):
        where = f'{path}:{lineno}'
        if not isinstance(rec, dict):
            raise ValueError(f'{where}: expected a JSON object')
        for key, typ in (('question', str), ('cot', str), ('keep_spans', list)):
            if key not in rec:
                raise ValueError(f"{where}: missing key '{key}'")
            if not isinstance(rec[key], typ):
                raise ValueError(f"{where}: key '{key}' must be {typ.__name__}, got {type(rec[key]).__name__}")
        prev = 0
        for span in rec['keep_spans']:
            ok = isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
            if not ok or not (prev <= span[0] < span[1] <= len(rec['cot'])):
                raise ValueError(f"{where}: bad keep_spans entry {span!r} (need sorted, disjoint [start, end) "
                                 f"int pairs inside the cot of length {len(rec['cot'])})")
            prev = span[1]
        records.append(rec)
        if limit and len(records) >= limit:
            break
    if not records:
        raise ValueError(f'{path}: no records')
    return records


def _jsonl_with_lines(path):
    import json
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})') from None


def token_spans(tok, text):
    """ids and each token's char span with surrounding whitespace stripped ((s, s) for a
    whitespace-only token). Byte-level BPE offsets include the leading space of ' word'."""
    ids, offsets = tok.encode_with_offsets(text)
    spans = []
    for s, e in offsets:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        spans.append((s, e))
    return ids, spans


def encode_pair(tok, question, cot, max_len, max_q, keep_spans=None):
    """Input ids  question[:max_q] + <think> + cot  (cut to max_len), the index of the first
    CoT token, the CoT tokens' stripped char spans, and labels (keep 1 / drop 0 on CoT tokens
    with text, -100 elsewhere) when keep_spans is given."""
    q_ids = tok.encode(question)[:max_q]
    c_ids, spans = token_spans(tok, cot)
    c_ids, spans = c_ids[:max_len - len(q_ids) - 1], spans[:max_len - len(q_ids) - 1]
    ids = q_ids + [tok.think_start_id] + c_ids
    labels = None
    if keep_spans is not None:
        labels = [-100] * (len(q_ids) + 1)
        j = 0
        for s, e in spans:
            if s == e:
                labels.append(-100)
                continue
            while j < len(keep_spans) and keep_spans[j][1] <= s:
                j += 1  # spans are sorted and tokens advance, so a single sweep suffices
            labels.append(int(j < len(keep_spans) and keep_spans[j][0] < e))
    return ids, len(q_ids) + 1, spans, labels


def pad_examples(examples, pad_id):
    T = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        x[i, :len(ids)] = torch.tensor(ids)
        y[i, :len(ids)] = torch.tensor(labels)
        mask[i, :len(ids)] = 1
    return x, y, mask


# -----------------------------------------------------------------------------
# model, loss, metrics


def build_model(cfg, tok):
    from model import Qwen3, Qwen3Config
    if cfg['init_from'] == 'scratch':
        mcfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=cfg['n_embd'], intermediate_size=cfg['intermediate_size'],
                           num_hidden_layers=cfg['n_layer'], num_attention_heads=cfg['n_head'],
                           num_key_value_heads=cfg['n_kv_head'], head_dim=cfg['n_embd'] // cfg['n_head'],
                           max_position_embeddings=max(cfg['max_len'], 1024), rope_theta=10000.0,
                           tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_id,
                           pad_token_id=tok.pad_id, torch_dtype='float32')
        return Qwen3(mcfg, num_labels=2, causal=False).init_weights(cfg['seed'])
    model = Qwen3.from_pretrained(cfg['init_from'], dtype=torch.float32, num_labels=2, causal=False)
    if model.config.vocab_size < tok.vocab_size:  # budget tokens appended to a Qwen3 tokenizer
        model.resize_token_embeddings(tok.vocab_size)
    return model


def token_loss(logits, labels, kind='ce', gamma=2.0):
    """Mean over labelled tokens of CE = -log p_t, or focal = -(1 - p_t)^gamma log p_t."""
    logits, labels = logits.float().flatten(0, 1), labels.flatten()
    if kind == 'ce':
        return F.cross_entropy(logits, labels, ignore_index=-100)
    if kind != 'focal':
        raise ValueError(f"loss must be 'ce' or 'focal', got {kind!r}")
    keep = labels != -100
    logp = F.log_softmax(logits[keep], -1).gather(1, labels[keep][:, None]).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def round_half_up(x):
    return int(math.floor(x + 0.5))


@torch.no_grad()
def evaluate_classifier(model, examples, device, pad_id, batch=32, ratios=(0.2, 0.4)):
    """Counts summed over examples: confusion (tp/fp/fn/tn for keep=1), and per ratio g the keep
    tokens inside the top round(n*g) scores. Returns the counts list (for all_reduce)."""
    model.eval()
    tp = fp = fn = tn = 0
    survived = [0] * len(ratios)
    n_keep = 0
    for i in range(0, len(examples), batch):
        x, y, mask = pad_examples(examples[i:i + batch], pad_id)
        logits = model(x.to(device), attention_mask=mask.to(device)).float().cpu()
        score = logits[..., 1] - logits[..., 0]
        pred = score > 0
        for b in range(x.shape[0]):
            lab = y[b] != -100
            yt, pb, sb = y[b][lab], pred[b][lab], score[b][lab]
            tp += int((pb & (yt == 1)).sum()); fp += int((pb & (yt == 0)).sum())
            fn += int((~pb & (yt == 1)).sum()); tn += int((~pb & (yt == 0)).sum())
            n_keep += int((yt == 1).sum())
            for k, g in enumerate(ratios):
                top = sb.argsort(descending=True, stable=True)[:round_half_up(len(sb) * g)]
                survived[k] += int((yt[top] == 1).sum())
    model.train()
    return [tp, fp, fn, tn, n_keep] + survived


def metrics_from_counts(counts, ratios=(0.2, 0.4)):
    tp, fp, fn, tn, n_keep = counts[:5]
    f1_keep = 2 * tp / max(2 * tp + fp + fn, 1)
    f1_drop = 2 * tn / max(2 * tn + fn + fp, 1)
    out = {'macro_f1': (f1_keep + f1_drop) / 2, 'f1_keep': f1_keep, 'f1_drop': f1_drop,
           'accuracy': (tp + tn) / max(tp + fp + fn + tn, 1), 'keep_share': n_keep / max(tp + fp + fn + tn, 1)}
    for g, s in zip(ratios, counts[5:]):
        out[f'survival@{g}'] = s / max(n_keep, 1)
    return out


# -----------------------------------------------------------------------------
# training


def train(cfg):
    """Train the classifier per cfg (a dict with this module's config keys). Returns the best
    validation metrics (also after an early stop). Writes {out_dir}/ckpt = the best model."""
    from data import load_tokenizer
    from torch.nn.parallel import DistributedDataParallel as DDP
    t0 = time.time()
    rank, world, local_rank, device = setup_dist(cfg['device_type'])
    seed_everything(cfg['seed'] + rank)
    out = cfg['out_dir']
    tok = load_tokenizer(cfg['tokenizer_path'] or (os.path.join(os.path.dirname(cfg['train_path']), 'tokenizer')
                                                   if cfg['init_from'] == 'scratch' else cfg['init_from']))
    enc = lambda r: encode_pair(tok, r['question'], r['cot'], cfg['max_len'], cfg['max_question_tokens'], r['keep_spans'])
    train_ex = [(ids, lab) for ids, _, _, lab in map(enc, load_annotated(cfg['train_path'], cfg['max_train_records']))]
    val_ex = [(ids, lab) for ids, _, _, lab in map(enc, load_annotated(cfg['val_path'], cfg['max_val_records']))]
    val_ex = val_ex[rank::world]
    print0(f'compressor: {len(train_ex)} train / {sum(all_reduce_sum([len(val_ex)]))} val examples, '
           f'tokenized in {time.time() - t0:.1f}s')

    model = build_model(cfg, tok).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': cfg['weight_decay']},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=cfg['learning_rate'], betas=(0.9, 0.98))
    state = {'step': 0, 'best_f1': -1.0, 'best_metrics': None, 'bad_evals': 0, 'finished': False}
    ckpt = find_checkpoint(out) if cfg['resume'] else None
    if ckpt:
        from safetensors.torch import load_file
        ts = load_train_state(ckpt)
        model.load_state_dict(load_file(os.path.join(ckpt, 'model.safetensors')))
        opt.load_state_dict(ts['optimizer'])
        state = ts['state']
        set_rng_state(ts['rng'][rank] if isinstance(ts['rng'], list) and rank < len(ts['rng']) else ts['rng'])
        print0(f'resumed from {ckpt} at step {state["step"]}')
    if state['finished']:
        print0('training already finished; nothing to do')
        return state['best_metrics']
    ddp = DDP(model) if world > 1 else model
    autocast = torch.autocast('cuda', dtype=torch.bfloat16, enabled=cfg['dtype'] == 'bfloat16' and device.type == 'cuda')
    warmup = max(1, round(cfg['warmup_frac'] * cfg['max_iters']))
    lr_at = lambda it: cfg['learning_rate'] * (min(1.0, (it + 1) / warmup) if it < warmup else
                                               max(0.0, (cfg['max_iters'] - it) / max(1, cfg['max_iters'] - warmup)))
    order_rng = random.Random(cfg['seed'] * 1000 + rank + 7 * state['step'])  # data order is a function of step
    best_path = os.path.join(out, 'best.pt')
    if is_main():
        os.makedirs(out, exist_ok=True)

    def validate_and_save(step):
        counts = all_reduce_sum(evaluate_classifier(model, val_ex, device, tok.pad_id), device)
        m = metrics_from_counts([int(c) for c in counts])
        improved = m['macro_f1'] > state['best_f1']
        if improved:
            state.update(best_f1=m['macro_f1'], best_metrics=dict(m, step=step), bad_evals=0)
            if is_main():
                atomic_torch_save(model.state_dict(), best_path)
        else:
            state['bad_evals'] += 1
        print0(f"step {step}: val macro-F1 {m['macro_f1']:.4f} (keep F1 {m['f1_keep']:.3f}), survival@0.2 "
               f"{m['survival@0.2']:.3f} @0.4 {m['survival@0.4']:.3f}{' *' if improved else ''}")
        if is_main():
            append_jsonl(os.path.join(out, 'metrics.jsonl'), dict(m, step=step, kind='val', time=time.time() - t0))
            save_checkpoint(out, model, tok, {'optimizer': opt.state_dict(), 'state': state, 'rng': rng_state(),
                                              'config': cfg})
        barrier()
        return state['bad_evals'] >= cfg['patience']

    stop = False
    while state['step'] < cfg['max_iters'] and not stop:
        it = state['step']
        batch = [train_ex[order_rng.randrange(len(train_ex))] for _ in range(cfg['batch_size'])]
        x, y, mask = pad_examples(batch, tok.pad_id)
        for g in opt.param_groups:
            g['lr'] = lr_at(it)
        with autocast:
            logits = ddp(x.to(device), attention_mask=mask.to(device))
        lossv = token_loss(logits, y.to(device), cfg['loss'], cfg['focal_gamma'])
        opt.zero_grad(set_to_none=True)
        lossv.backward()
        if cfg['grad_clip'] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
        opt.step()
        state['step'] = it + 1
        if it % 25 == 0:
            print0(f'step {it}: loss {lossv.item():.4f} lr {lr_at(it):.2e} ({time.time() - t0:.1f}s)')
        if state['step'] % cfg['eval_interval'] == 0 or state['step'] == cfg['max_iters']:
            stop = validate_and_save(state['step'])
    # the final checkpoint holds the best weights (early stopping), marked finished
    if is_main():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
        state['finished'] = True
        save_checkpoint(out, model, tok, {'optimizer': opt.state_dict(), 'state': state, 'rng': rng_state(), 'config': cfg})
    barrier()
    print0(f"compressor done in {time.time() - t0:.1f}s: best val macro-F1 {state['best_f1']:.4f} at step "
           f"{state['best_metrics']['step']}{' (early stop)' if stop else ''}")
    return state['best_metrics']


# -----------------------------------------------------------------------------
# compression

# a LaTeX span, or a plain equation: numbers joined by operators with at least one '='
_NUM = r'\$?\(?-?\d+(?:,\d{3})*(?:\.\d+)?%?\)?'
FORMULA_RE = re.compile(r'\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]|'
                        rf'{_NUM}(?:\s*[-+*/×÷^=<>≤≥]\s*{_NUM})+', re.S)


def formula_spans(text):
    spans = []
    for m in FORMULA_RE.finditer(text):
        latex = m.group().startswith(('$$', '\\(', '\\[')) or (m.group()[0] == '$' and m.group()[-1] == '$')
        if latex or '=' in m.group():
            spans.append(m.span())
    return spans


def cot_units(cot, spans):
    """Selection units: [(start, end, [token indices], is_formula)] in text order. Words (\\S+
    runs) merged with any formula span they overlap; whitespace-only tokens belong to no unit."""
    intervals = sorted([(*m.span(), False) for m in re.finditer(r'\S+', cot)] + [(s, e, True) for s, e in formula_spans(cot)])
    merged = []
    for s, e, formula in intervals:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
            merged[-1][2] = merged[-1][2] or formula
        else:
            merged.append([s, e, formula])
    units = [(s, e, [], formula) for s, e, formula in merged]
    starts = [m[0] for m in merged]
    import bisect
    for i, (s, e) in enumerate(spans):
        if s < e:
            units[bisect.bisect_right(starts, s) - 1][2].append(i)
    return [u for u in units if u[2]]


def group_drop_runs(cot, units, scores):
    """Coarser units where the classifier drops: consecutive plain words whose best token
    scores <= 0 (predicted drop) merge into one unit that ends at a clause mark (. , ; : ? !).
    Why: the annotations are binary, so the ranking among drop words is arbitrary; selected
    word by word, a budget above the decisive share filled itself with function words torn
    out of filler ("the with the at ..."), which the SFT model then imitated. As whole
    clauses, filler enters a compressed CoT readable, or not at all. Decisive words and
    formulas stay units of their own. A merged run is marked is_formula=None (scored by its mean)."""
    out, run = [], []

    def flush():
        if run:
            out.append((run[0][0], run[-1][1], [i for u in run for i in u[2]], None if len(run) > 1 else False))
            run.clear()
    for u in units:
        if not u[3] and max(scores[i] for i in u[2]) <= 0:
            run.append(u)
            if cot[u[1] - 1] in '.,;:?!':
                flush()
        else:
            flush()
            out.append(u)
    flush()
    return out


def select_units(units, scores, ratio):
    """Indices of the kept units (text order): best unit score first, a unit taken when it
    brings the kept count closer to target = round(n*ratio): 2*(kept + size - target) <= size."""
    n = sum(len(u[2]) for u in units)
    target = round_half_up(n * ratio)
    # a formula or a merged drop run scores its mean token score; a plain word its best token,
    # so that '12.' is not dragged down by its period
    mean = [max(scores[i] for i in u[2]) if u[3] is False else sum(scores[i] for i in u[2]) / len(u[2])
            for u in units]
    kept, total = [], 0
    for j in sorted(range(len(units)), key=lambda j: -mean[j]):
        size = len(units[j][2])
        if 2 * (total + size - target) <= size:
            kept.append(j)
            total += size
    return sorted(kept), total, n


def render_units(cot, units, kept):
    """Kept unit texts in order; a gap with a newline in the original stays one, else a space;
    then whitespace normalized (spaces collapsed, lines stripped, empty lines dropped)."""
    parts = []
    for k, j in enumerate(kept):
        if k:
            gap = cot[units[kept[k - 1]][1]:units[j][0]]
            parts.append('\n' if '\n' in gap else ' ')
        parts.append(cot[units[j][0]:units[j][1]])
    lines = [' '.join(line.split()) for line in ''.join(parts).split('\n')]
    return '\n'.join(line for line in lines if line)


@torch.no_grad()
def score_cots(model, tok, pairs, max_len=4096, max_q=512, batch_size=16):
    """Keep scores (logit_keep - logit_drop) for every CoT token of each (question, cot), one
    forward per CoT (a CoT longer than the window is scored in consecutive windows, each with
    the question in front). Returns [(spans, scores)]."""
    model.eval()
    device = next(model.parameters()).device
    jobs, results = [], []
    for k, (q, cot) in enumerate(pairs):
        q_ids = tok.encode(q)[:max_q]
        c_ids, spans = token_spans(tok, cot)
        room = max(1, max_len - len(q_ids) - 1)
        results.append((spans, [0.0] * len(c_ids)))
        for w in range(0, len(c_ids), room):
            jobs.append((k, w, q_ids + [tok.think_start_id] + c_ids[w:w + room], len(q_ids) + 1))
    jobs.sort(key=lambda j: len(j[2]))  # similar lengths together: less padding
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i:i + batch_size]
        x, _, mask = pad_examples([(ids, [0] * len(ids)) for _, _, ids, _ in chunk], tok.pad_id)
        logits = model(x.to(device), attention_mask=mask.to(device)).float().cpu()
        score = (logits[..., 1] - logits[..., 0]).tolist()
        for b, (k, w, ids, start) in enumerate(chunk):
            results[k][1][w:w + len(ids) - start] = score[b][start:len(ids)]
    return results


def compress_batch(model, tok, pairs, ratios, reasoning_tok=None, max_len=4096, batch_size=16):
    """Compress each (question, cot) at every ratio with one scoring pass per CoT.
    Returns, per pair, a list (one per ratio) of dict(text, ratio, realized_ratio, kept_tokens,
    total_tokens); kept/total count compressor tokens, realized_ratio reasoning-model tokens."""
    rtok = reasoning_tok or tok
    out = []
    for (q, cot), (spans, scores) in zip(pairs, score_cots(model, tok, pairs, max_len, batch_size=batch_size)):
        units = group_drop_runs(cot, cot_units(cot, spans), scores)
        n_orig = len(rtok.encode(cot.strip()))
        if n_orig == 0:
            raise ValueError(f'compress: empty CoT for question {q[:60]!r}')
        rows = []
        for g in ratios:
            if not 0.0 <= g <= 1.0:
                raise ValueError(f'compress: ratio {g} is outside [0, 1]')
            kept, k_tokens, n = select_units(units, scores, g)
            text = render_units(cot, units, kept)
            rows.append(dict(text=text, ratio=g, realized_ratio=len(rtok.encode(text)) / n_orig,
                             kept_tokens=k_tokens, total_tokens=n))
        out.append(rows)
    return out


def compress(model, tok, question, cot, ratio, reasoning_tok=None):
    """dict(text, realized_ratio, kept_tokens, total_tokens) for one CoT at one ratio."""
    return compress_batch(model, tok, [(question, cot)], [ratio], reasoning_tok)[0][0]


def load_compressor(path, device='cpu'):
    from data import load_tokenizer
    from model import Qwen3
    return Qwen3.from_pretrained(path, dtype=torch.float32, device=device, num_labels=2, causal=False), load_tokenizer(path)


# -----------------------------------------------------------------------------
# building the mixed-ratio SFT set


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


def build_sft_records(model, tok, samples, rtok, cfg, teacher=None):
    """Mixed-ratio SFT records from graded samples (evaluate.sample_and_grade rows) and optional
    teacher budget rows. Returns (records, stats)."""
    from data import mode_name
    stats = {'samples': len(samples), 'correct': 0, 'degenerate': 0, 'missing_bucket': 0, 'questions': 0}
    cots = {}  # id -> (question, gold, cot, difficulty): the first correct, closed, non-degenerate CoT
    for s in samples:
        if not s.get('correct') or s['id'] in cots:
            continue
        stats['correct'] += 1
        cot = own_cot(s, rtok)
        if not cot:
            continue
        if is_degenerate(rtok, cot, cfg['min_cot_tokens'], cfg['max_ngram_repeats']):
            stats['degenerate'] += 1
            continue
        cots[s['id']] = (s['question'], s['gold'], cot, s.get('difficulty'))
    ids = list(cots)
    comp = dict(zip(ids, compress_batch(model, tok, [(cots[i][0], cots[i][2]) for i in ids], cfg['compress_ratios'], rtok,
                                        batch_size=cfg['compress_batch_size'])))
    records, rng = [], random.Random(cfg['build_seed'])
    full_ids = []
    for qid in ids:
        q, gold, cot, diff = cots[qid]
        ok = [r for r in comp[qid] if not is_degenerate(rtok, r['text'], cfg['min_cot_tokens'], cfg['max_ngram_repeats'])]
        stats['degenerate'] += len(comp[qid]) - len(ok)
        buckets = rebucket(ok, cfg['bucket_tol'])
        if len(buckets) < len(BUCKETS):
            stats['missing_bucket'] += 1
            continue
        full_ids.append(qid)
        for b in BUCKETS:
            records.append({'id': qid, 'question': q, 'cot': buckets[b]['text'], 'answer': gold, 'mode': mode_name(b),
                            'realized_ratio': round(buckets[b]['realized_ratio'], 4)})
        records.append({'id': qid, 'question': q, 'cot': cot, 'answer': gold, 'mode': None, 'realized_ratio': 1.0})
    # ratio 1.0: half carry <COMP_100>, half no budget token (PAPER.md)
    full = [r for r in records if r['mode'] is None]
    rng.shuffle(full)
    for k, r in enumerate(full):
        r['mode'] = '1.0' if k < (len(full) + 1) // 2 else 'none'
    stats['questions'] = len(full_ids)
    # POLICY warm-up: mode 'auto', chosen = g* (all-fail -> 1.0), CoT compressed at g*
    if teacher:
        if cfg['replay_fraction'] < 1.0:  # a warm-up round keeps only this share of the fixed-mode records
            rng.shuffle(records)
            records = records[:round(cfg['replay_fraction'] * len(records))]
        n_fixed = len(records)
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
        want = round(cfg['warmup_fraction'] * n_fixed)
        warm = []
        for m, share in POLICY_MIX.items():
            rng.shuffle(by_bucket[m])
            if cfg['warmup_mix'] == 'paper':  # at most the paper's share of each budget
                warm += by_bucket[m][:round(share * want)]
            else:  # 'natural': the labels as they come, scaled to `want` items in all
                total = sum(len(v) for v in by_bucket.values())
                warm += by_bucket[m][:round(len(by_bucket[m]) * min(1.0, want / max(1, total)))]
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


def build_sft_data(cfg):
    """Sample the base model on the SFT pool, compress its correct own CoTs, write sft_mixed."""
    import evaluate
    from data import load_tokenizer
    from model import Qwen3
    t0 = time.time()
    _, _, _, device = setup_dist(cfg['device_type'])
    if not is_main():  # one process builds; the others wait
        barrier()
        return None
    comp_path = cfg['compressor_ckpt'] or os.path.join(cfg['out_dir'], 'ckpt')
    for path, what in ((comp_path, 'compressor checkpoint'), (cfg['base_ckpt'], 'base model checkpoint'),
                       (cfg['sft_pool_path'], 'SFT question pool')):
        hub_id = path.count('/') == 1 and not path.startswith(('.', '/', 'out/'))
        if not hub_id and not os.path.exists(path):
            raise FileNotFoundError(f'{path}: {what} not found')
    model, tok = load_compressor(comp_path, device)
    base = Qwen3.from_pretrained(cfg['base_ckpt'], device=device)
    rtok = load_tokenizer(cfg['base_ckpt'])
    items = read_jsonl(cfg['sft_pool_path'])
    if cfg['build_max_questions']:
        items = items[:cfg['build_max_questions']]
    teacher = None
    if os.path.exists(cfg['teacher_budgets_path']):
        teacher = read_jsonl(cfg['teacher_budgets_path'])
        known = {it['id'] for it in items}
        items += [{'id': t['id'], 'question': t['question'], 'answer': t['answer']} for t in teacher if t['id'] not in known]
    else:
        print0(f"no teacher budgets at {cfg['teacher_budgets_path']}: POLICY warm-up items skipped")
    # the base model's answers are cached per question, so that the second build (after the
    # teacher budgets exist, for the POLICY warm-up items) only samples the new questions
    cache_path = os.path.join(cfg['out_dir'], 'base_samples.jsonl')
    cached = {}
    for r in read_jsonl_tolerant(cache_path):
        if r.get('base_ckpt') == os.path.abspath(cfg['base_ckpt']):
            cached.setdefault(r['id'], []).append(r)
    todo = [it for it in items if it['id'] not in cached]
    print0(f'build: {len(items) - len(todo)} questions answered before (cache), {len(todo)} to sample')
    new = evaluate.sample_and_grade(base, rtok, todo, mode='none', n=cfg['build_n_samples'],
                                    temperature=cfg['build_temperature'], top_p=cfg['build_top_p'],
                                    max_new_tokens=cfg['build_max_new_tokens'], seed=cfg['build_seed'])
    for s in new:
        row = {k: s[k] for k in ('id', 'question', 'gold', 'difficulty', 'correct', 'tokens')}
        row['base_ckpt'] = os.path.abspath(cfg['base_ckpt'])
        append_jsonl(cache_path, row)
        cached.setdefault(s['id'], []).append(row)
    samples = [r for it in items for r in cached[it['id']]]
    if cfg['build_fallback_gold_cots']:
        # smoke runs only: a minuscule base model answers nothing correctly, so questions it missed
        # get their corpus CoT as if the model had written it (the paper warns that training on
        # non-own CoTs costs accuracy: never use this for a real run)
        from data import answer_text, render_completion
        solved = {s['id'] for s in samples if s['correct']}
        fallback = [it for it in items if it['id'] not in solved and it.get('cot')]
        for it in fallback:
            ids = rtok.encode(render_completion(it['cot'], answer_text(it['answer']), 'none'))
            samples.append({'id': it['id'], 'question': it['question'], 'gold': it['answer'],
                            'difficulty': it.get('difficulty'), 'correct': True, 'tokens': ids})
        print0(f'build: {len(fallback)} questions use their corpus CoT (build_fallback_gold_cots, smoke runs only)')
    t1 = time.time()
    del base
    records, stats = build_sft_records(model, tok, samples, rtok, cfg, teacher)
    if not records:
        raise SystemExit(f"build: no usable records ({stats}); the base model at {cfg['base_ckpt']} answered "
                         f"no question correctly with a closed think, or every question missed a bucket")
    write_jsonl(cfg['sft_mixed_path'], records)
    print0(f"build: {stats} -> {len(records)} records in {cfg['sft_mixed_path']} "
           f"(sampling {t1 - t0:.1f}s, compressing {time.time() - t1:.1f}s)")
    print_bucket_table(records)
    barrier()
    return stats


def main():
    cfg = config_from_globals()
    if cfg['stage'] not in ('train', 'build', 'all'):
        raise SystemExit(f"stage must be 'train', 'build' or 'all', got {cfg['stage']!r}")
    if cfg['stage'] in ('train', 'all'):
        train(cfg)
    if cfg['stage'] in ('build', 'all'):
        build_sft_data(cfg)
    cleanup_dist()


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
