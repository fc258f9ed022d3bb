"""
The question-aware CoT compressor (the Extra-CoT paper, Stage 1) as a library: the model,
how a (question, CoT) pair becomes tokens and keep/drop labels, and compression of a CoT at
a ratio with a trained classifier. Training is train_compressor.py; building the SFT data
with it is build_sft_data.py.

    from compressor import load_compressor, compress
    model, tok = load_compressor('out/compressor/ckpt')
    out = compress(model, tok, question, cot, 0.4)   # dict(text, realized_ratio, kept_tokens, total_tokens)

The classifier (model.py's Qwen3 run bidirectionally, `causal=False`, with a 2-label head)
reads  question tokens, <think>, CoT tokens  and predicts keep (1) / drop (0) for every CoT
token. Question tokens are context only (label -100). A CoT token is labelled keep when its
char range (whitespace stripped) overlaps a keep span of the annotated corpus. Graded
annotations (key_spans inside the keep spans: equations, the conclusion) make the target
soft: key 1, other kept tokens `support_label` (train_compressor.py), filler 0. The score
then ranks key > support > filler, and a ratio just under the decisive share cuts
restatements of the question before it cuts an equation.
Paper scale: the paper's Longformer-large (435M, 4096 tokens) is replaced by Qwen3-0.6B made
bidirectional (same size class, loads with this repo's own model code, 32k positions); its
pretrained causal weights are a warm start for the bidirectional encoder, the head is fresh.

Compressing at ratio g (`compress`, `compress_batch`): one forward pass, score = keep logit
minus drop logit per CoT token; the selection units are whitespace-delimited words, merged
with formula spans ("24 - 9 = 15", $...$, \\( \\), \\[ \\]) so that a number or an equation
is kept or dropped whole (a digit-by-digit tokenizer would otherwise cut numbers); a formula
scores the mean of its tokens, a plain word its best token ("12." is not sunk by its
period). Where the classifier drops (best token score <= 0), consecutive plain words up to a
sentence end merge into one unit scored by its mean (`group_drop_runs`): once the decisive
words are in, filler is added as whole sentences, never as function words or clauses torn out
of it; with support_max the same holds one level up (up to a clause mark), for the restated
actions between key and filler. Filler that re-computes (`recomputing_filler`: a dropped
sentence holding two or more numbers, "Let me verify: 24 minus 9 gives 15, correct.") comes
last. Units are taken best-first while they bring the kept token count closer to
target = round(n*g) (round half up), so |kept - target| <= largest unit / 2.
Kept units stay in their original order; a gap holding a newline stays a newline, any other
gap is one space. The realized ratio is measured in the REASONING model's tokenizer:
len(encode(compressed)) / len(encode(original)).
"""
import bisect
import math
import re

import torch

from model import Qwen3, Qwen3Config, resolve_model_dir, trained_vocab_size
from tokenizer import load_tokenizer


# -----------------------------------------------------------------------------
# (question, cot) -> ids, CoT token spans, keep/drop labels

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


def _overlaps(spans, s, e, j):
    """(True if token chars [s, e) overlap a span, the advanced sweep index) over sorted spans."""
    while j < len(spans) and spans[j][1] <= s:
        j += 1  # spans are sorted and tokens advance, so a single sweep suffices
    return j < len(spans) and spans[j][0] < e, j


def encode_pair(tok, question, cot, max_len, max_q, keep_spans=None, key_spans=None, support_label=1.0):
    """Input ids  question[:max_q] + <think> + cot  (cut to max_len), the index of the first
    CoT token, the CoT tokens' stripped char spans, and labels when keep_spans is given: -100
    outside the CoT and on whitespace tokens; on CoT tokens the keep target, 1 for a token that
    overlaps a keep span and 0 otherwise. With key_spans (graded annotations), a kept token
    outside every key span gets support_label instead of 1: a soft target, so the classifier
    scores it log(s / (1 - s)), below the key tokens and above the filler."""
    q_ids = tok.encode(question)[:max_q]
    c_ids, spans = token_spans(tok, cot)
    c_ids, spans = c_ids[:max_len - len(q_ids) - 1], spans[:max_len - len(q_ids) - 1]
    ids = q_ids + [tok.think_start_id] + c_ids
    labels = None
    if keep_spans is not None:
        labels = [-100] * (len(q_ids) + 1)
        j = k = 0
        for s, e in spans:
            if s == e:
                labels.append(-100)
                continue
            keep, j = _overlaps(keep_spans, s, e, j)
            if keep and key_spans is not None:
                key, k = _overlaps(key_spans, s, e, k)
                labels.append(1 if key else support_label)
            else:
                labels.append(int(keep))
    return ids, len(q_ids) + 1, spans, labels


def pad_examples(examples, pad_id):
    T = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), -100.0)  # keep targets (soft with graded annotations)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        x[i, :len(ids)] = torch.tensor(ids)
        y[i, :len(ids)] = torch.tensor(labels)
        mask[i, :len(ids)] = 1
    return x, y, mask


# -----------------------------------------------------------------------------
# the model


def build_model(tok, init_from, seed, n_layer, n_embd, n_head, n_kv_head, intermediate_size, max_len):
    """A bidirectional Qwen3 with a 2-label head: from scratch (the size arguments, init seed), or
    from a causal Qwen3 checkpoint / hub id (init_from) as a warm start with a fresh head."""
    if init_from == 'scratch':
        mcfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=n_embd, intermediate_size=intermediate_size,
                           num_hidden_layers=n_layer, num_attention_heads=n_head,
                           num_key_value_heads=n_kv_head, head_dim=n_embd // n_head,
                           max_position_embeddings=max(max_len, 1024), rope_theta=10000.0,
                           tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_id,
                           pad_token_id=tok.pad_id, torch_dtype='float32')
        return Qwen3(mcfg, num_labels=2, causal=False).init_weights(seed)
    model = Qwen3.from_pretrained(init_from, dtype=torch.float32, num_labels=2, causal=False)
    # budget tokens appended to a Qwen3 tokenizer: the mean trained row, also inside the padding rows
    model.fit_vocab(tok.vocab_size, trained_vocab_size(resolve_model_dir(init_from), model.config.vocab_size))
    return model


def load_compressor(path, device='cpu'):
    """(model, tokenizer) of a trained compressor checkpoint folder."""
    return Qwen3.from_pretrained(path, dtype=torch.float32, device=device, num_labels=2, causal=False), load_tokenizer(path)


# -----------------------------------------------------------------------------
# compression: units, selection, rendering, scoring

def round_half_up(x):
    """round(x) with halves up (Python's round() rounds halves to even): the target round(n*g)."""
    return int(math.floor(x + 0.5))


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
    for i, (s, e) in enumerate(spans):
        if s < e:
            units[bisect.bisect_right(starts, s) - 1][2].append(i)
    return [u for u in units if u[2]]


def group_drop_runs(cot, units, scores, support_max=None):
    """Coarser units where the classifier drops: consecutive plain words whose best token
    scores <= 0 (predicted drop) merge into one unit that ends at a sentence end (. ? !).
    Why: every filler word has the same label (drop), so the ranking among drop words is arbitrary; selected
    word by word, a budget above the decisive share filled itself with function words torn
    out of filler ("the with the at ..."), which the SFT model then imitated. Cut at every
    clause mark, it kept torn clauses instead: the numbers of a spoken double-check without
    their framing ("21 plus 18 gives 39," running into the next equation). As whole
    sentences, filler enters a compressed CoT readable, or not at all.
    support_max: plain words whose best score is in (0, support_max] (support: the restated
    actions of graded annotations, trained to support_label, all scoring alike) merge the same
    way, in runs of their own that end at a clause mark (. , ; : ? !): a ratio just above the
    key share then keeps a whole restated action or none of it, not "has 29 She 2 times many
    pencils,". None = no such grouping (the TokenSkip-style scores have no support class).
    Formulas and words scoring above support_max (key: equations, the conclusion) stay units
    of their own. A merged run is marked is_formula=None (scored by its mean)."""
    out, run, run_kind = [], [], None

    def flush():
        if run:
            out.append((run[0][0], run[-1][1], [i for u in run for i in u[2]], None if len(run) > 1 else False))
            run.clear()
    for u in units:
        best = max(scores[i] for i in u[2])
        grouped = not u[3] and (best <= 0 or (support_max is not None and best <= support_max))
        if not grouped:  # a formula, or a word scoring above the grouped classes: a unit of its own
            flush()
            out.append(u)
            continue
        kind = 'drop' if best <= 0 else 'support'
        if kind != run_kind:  # drop and support words never share a unit
            flush()
        run.append(u)
        run_kind = kind
        if cot[u[1] - 1] in ('.?!' if kind == 'drop' else '.,;:?!'):  # filler: sentences; support: clauses
            flush()
    flush()
    return out


def recomputing_filler(cot, units, scores):
    """Indices of the units that are filler (best token score <= 0, not a formula) holding two
    or more numbers: a spoken re-check of a computation ("Hmm, 45 minus 4 is 41, yes."). The
    classifier scores all filler alike (about -8), so which filler a ratio above the decisive
    share keeps is otherwise its noise. Kept re-checks cost accuracy: on one seed the compressor
    happened to rank them first, its 0.8 targets kept every one (1.9 a CoT), and in 18.6% of
    the 4-5 step answers of the model trained on them an equation started from a number other
    than the previous result (a re-check's number copied); as sentences taken last: 0.0%, and
    sft 0.8 81.3 -> 95.3."""
    return [j for j, u in enumerate(units) if u[3] is not True and max(scores[i] for i in u[2]) <= 0
            and len(re.findall(r'\d+', cot[u[0]:u[1]])) >= 2]


def select_units(units, scores, ratio, last=()):
    """Indices of the kept units (text order): best unit score first (the units in `last`
    after every other), a unit taken when it brings the kept count closer to
    target = round(n*ratio): 2*(kept + size - target) <= size."""
    n = sum(len(u[2]) for u in units)
    target = round_half_up(n * ratio)
    # a formula or a merged drop run scores its mean token score; a plain word its best token,
    # so that '12.' is not dragged down by its period
    mean = [max(scores[i] for i in u[2]) if u[3] is False else sum(scores[i] for i in u[2]) / len(u[2])
            for u in units]
    kept, total, last = [], 0, set(last)
    for j in sorted(range(len(units)), key=lambda j: (j in last, -mean[j])):
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


def compress_scored(cot, spans, scores, ratios, rtok, support_max=None):
    """One CoT at every ratio from its token scores (score_cots, or another scorer's):
    a list, one per ratio, of dict(text, ratio, realized_ratio, kept_tokens, total_tokens);
    kept/total count scorer tokens, realized_ratio reasoning-model (rtok) tokens.
    support_max: see group_drop_runs."""
    units = group_drop_runs(cot, cot_units(cot, spans), scores, support_max)
    n_orig = len(rtok.encode(cot.strip()))
    if n_orig == 0:
        raise ValueError(f'compress: empty CoT {cot!r}')
    last = recomputing_filler(cot, units, scores)
    rows = []
    for g in ratios:
        if not 0.0 <= g <= 1.0:
            raise ValueError(f'compress: ratio {g} is outside [0, 1]')
        kept, k_tokens, n = select_units(units, scores, g, last)
        text = render_units(cot, units, kept)
        rows.append(dict(text=text, ratio=g, realized_ratio=len(rtok.encode(text)) / n_orig,
                         kept_tokens=k_tokens, total_tokens=n))
    return rows


def compress_batch(model, tok, pairs, ratios, reasoning_tok=None, max_len=4096, batch_size=16, support_max=None):
    """Compress each (question, cot) at every ratio with one scoring pass per CoT.
    Returns, per pair, compress_scored's list (one dict per ratio)."""
    return [compress_scored(cot, spans, scores, ratios, reasoning_tok or tok, support_max)
            for (q, cot), (spans, scores) in zip(pairs, score_cots(model, tok, pairs, max_len, batch_size=batch_size))]


def compress(model, tok, question, cot, ratio, reasoning_tok=None, support_max=None):
    """dict(text, realized_ratio, kept_tokens, total_tokens) for one CoT at one ratio."""
    return compress_batch(model, tok, [(question, cot)], [ratio], reasoning_tok, support_max=support_max)[0][0]
