"""
Keep spans: reading annotated CoT corpora for the compressor, and a rule-based annotator for
CoTs that come without spans. The paper (Extra-CoT, Stage 1) labels CoTs with GPT-4o; these
rules stand in for it, so the pipeline runs on real CoTs without a paid labelling API.

Annotate a jsonl file (records with 'question' and 'cot'; records that already carry
'keep_spans' are checked and passed through unchanged):

    python annotate.py my_cots.jsonl my_cots_annotated.jsonl

The compressor's training does the same on the fly: train_compressor.py reads its corpus with
`load_annotated`, which annotates every record without 'keep_spans' by these rules.

keep_spans: [[start, end], ...] char offsets into the cot, end exclusive, sorted, disjoint.
key_spans (optional, same format, each inside a keep span) grade them: the parts a reader who
has the question cannot rebuild (equations, the conclusion). The rules below mark keep spans
only; records without key_spans train the compressor on binary labels.
The rules aim at what the paper's annotator marks: sentences that carry math (numbers,
relation symbols, LaTeX) or a conclusion, minus leading narration; they drop hedges,
narration, re-checks and restatements. A math span is never cut.
"""
import os
import re
import sys

from common import iter_jsonl, print0, write_jsonl


# -----------------------------------------------------------------------------
# annotated records: read, check, annotate the ones without spans

def check_annotated(rec, where):
    """Raise ValueError naming `where` and the key unless rec has a str 'question', a str 'cot'
    and 'keep_spans': sorted, disjoint [start, end) int pairs inside the cot; and, when present,
    'key_spans': sorted, disjoint pairs, each inside one keep span."""
    for key, typ in (('question', str), ('cot', str), ('keep_spans', list)):
        if key not in rec:
            raise ValueError(f"{where}: missing key '{key}'")
        if not isinstance(rec[key], typ):
            raise ValueError(f"{where}: key '{key}' must be {typ.__name__}, got {type(rec[key]).__name__}")
    _check_spans(rec['keep_spans'], lambda s, e: e <= len(rec['cot']), where, 'keep_spans',
                 f"inside the cot of length {len(rec['cot'])}")
    if 'key_spans' in rec:  # graded annotations (optional): key parts of the decisive content
        if not isinstance(rec['key_spans'], list):
            raise ValueError(f"{where}: key 'key_spans' must be list, got {type(rec['key_spans']).__name__}")
        _check_spans(rec['key_spans'], lambda s, e: any(a <= s and e <= b for a, b in rec['keep_spans']), where,
                     'key_spans', 'each inside one keep span')


def _check_spans(spans, inside, where, key, what):
    """Raise ValueError unless spans are sorted, disjoint [start, end) int pairs with inside(start, end)."""
    prev = 0
    for span in spans:
        ok = isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
        if not ok or not prev <= span[0] < span[1] or not inside(*span):
            raise ValueError(f"{where}: bad {key} entry {span!r} (need sorted, disjoint [start, end) int pairs {what})")
        prev = span[1]


def load_annotated(path, limit=0):
    """Records of a jsonl corpus, each with checked keep spans; a record without 'keep_spans'
    gets them from annotate_cot. Errors name file:line and the key."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: annotated corpus not found (run `python corpus.py`)')
    records, n_annotated = [], 0
    for lineno, rec in iter_jsonl(path):
        where = f'{path}:{lineno}'
        if 'keep_spans' not in rec and isinstance(rec.get('cot'), str):
            rec = dict(rec, keep_spans=annotate_cot(rec['cot']))
            n_annotated += 1
        check_annotated(rec, where)
        records.append(rec)
        if limit and len(records) >= limit:
            break
    if not records:
        raise ValueError(f'{path}: no records')
    if n_annotated:
        print0(f'{path}: {n_annotated} of {len(records)} records had no keep_spans: annotated by rules')
    return records


def annotate_file(in_path, out_path):
    """Write in_path's records to out_path (atomically), every one with keep spans."""
    records = load_annotated(in_path)
    write_jsonl(out_path, records)
    return records


# -----------------------------------------------------------------------------
# the rule-based annotator

# math spans kept whole: $..$, $$..$$, \[..\], \(..\), \boxed{..} are atomic
_MATH_RE = re.compile(r'\$\$.+?\$\$|\$.+?\$|\\\[.+?\\\]|\\\(.+?\\\)', re.S)
# a sentence ends at . ! ? followed by whitespace, or at a newline
_SENTENCE_END_RE = re.compile(r'(?<=[.!?])\s+|\n+')
# sentences that are re-checks or pure narration: dropped even when they hold numbers
_DROP_RE = re.compile(r"double[- ]check|\bverify\b|\bre-?check|\bcheck(ing)?\b|make sure|\bagain\b|"
                      r"\bis that right\b|\bseems right\b|\bmakes sense\b|\bchecks out\b|\bconfident\b", re.I)
# content that makes a sentence decisive
_MATH_CONTENT_RE = re.compile(r'\d|[=<>+\-*/^×÷≤≥≠]|\\(frac|sqrt|cdot|times|le|ge|neq|boxed)|\$')
_CONCLUSION_RE = re.compile(r'\b(answer|therefore|thus|hence|final(ly)?|in total|altogether)\b', re.I)
# leading discourse markers and first-person narration, stripped from kept sentences
_LEAD_RE = re.compile(r"(?:(?:so|then|now|next|first|and|but|well|ok(?:ay)?|alright|hmm+|wait|oh|"
                      r"therefore|thus|hence|that means|which means|this means)\b[,:]?\s*|"
                      r"(?:i (?:think|get|have|know|see|guess|need to|can|will|should|'ll)|"
                      r"let me|let's|we (?:get|have|need to|can)|that gives(?: us)?|this gives(?: us)?)\b[,:]?\s*)",
                      re.I)


def _sentence_bounds(cot):
    """(start, end) of each sentence; never split inside a math span."""
    masked = list(cot)
    for m in _MATH_RE.finditer(cot):  # hide math so its '.' and newlines do not split
        for k in range(m.start(), m.end()):
            masked[k] = 'x' if cot[k] in '.!?\n' else cot[k]
    masked = ''.join(masked)
    bounds, start = [], 0
    for m in _SENTENCE_END_RE.finditer(masked):
        if m.start() > start:
            bounds.append((start, m.start()))
        start = m.end()
    if start < len(cot):
        bounds.append((start, len(cot)))
    return bounds


def annotate_cot(cot):
    """Keep spans for a CoT by rules: keep sentences that carry math (numbers, relation
    symbols, LaTeX) or a conclusion, minus their leading narration ('So', 'Hmm,', 'let me',
    'I get') and trailing punctuation; drop hedges, narration without math, re-checks, and
    sentences that only restate equations or numbers already kept. Math spans are never cut."""
    math_spans = [(m.start(), m.end()) for m in _MATH_RE.finditer(cot)]
    spans, seen_equations, seen_numbers = [], set(), set()
    for a, b in _sentence_bounds(cot):
        sent = cot[a:b]
        if _DROP_RE.search(sent):
            continue
        conclusion = bool(_CONCLUSION_RE.search(sent))
        if not (_MATH_CONTENT_RE.search(sent) or conclusion):
            continue
        while True:  # strip leading discourse markers, never into a math span
            m = _LEAD_RE.match(cot, a, b)
            if not m or m.end() == a or any(s < m.end() <= e for s, e in math_spans if s >= a):
                break
            a = m.end()
        while b > a and cot[b - 1] in '.!?,;: ' and not any(s < b <= e for s, e in math_spans):
            b -= 1
        core = cot[a:b]
        equations = {re.sub(r'[\s$]+', '', e) for e in re.findall(r'[^,;:=]*=[^,;:=]*', core)}
        numbers = set(re.findall(r'\d+(?:\.\d+)?', core))
        if not conclusion and (equations <= seen_equations if equations else numbers and numbers <= seen_numbers):
            continue  # restates equations or results already kept
        seen_equations |= equations
        seen_numbers |= numbers
        if b > a:
            spans.append([a, b])
    return spans


if __name__ == '__main__':
    if len(sys.argv) != 3:
        raise SystemExit('usage: python annotate.py IN.jsonl OUT.jsonl')
    print(f'wrote {len(annotate_file(sys.argv[1], sys.argv[2]))} annotated records to {sys.argv[2]}')
