"""
The synthetic annotated math corpus that carries the CPU speedrun, and the tokenizer trained
on it. Writes out/data/{train,val,test,sft_pool,rl_pool}.jsonl and out/data/tokenizer/
(about 10-20 s on 2 CPU cores):

    python corpus.py                                  # the defaults below
    python corpus.py config/tiny_data.py              # the speedrun's data stage
    python corpus.py --n_train=5000 --filler=0.6      # any config key as --key=value

Corpus record (one JSON object a line):
    {"id", "question", "cot", "answer" (gold, e.g. "19"), "keep_spans": [[start, end], ...]
     (char offsets into cot, end exclusive, sorted, disjoint), "key_spans": the same kind of
     list, each inside a keep span (optional in other corpora), "difficulty" (number of steps)}
keep_spans have the format a real annotator produces (annotate.py checks them, and annotates
CoTs that come without them).

Design of the synthetic corpus (it has to carry the whole CPU speedrun):
- A problem is a chain of d steps on one count ("Mia has 12 shells. She buys 7 more
  shells. Then she gives 5 shells to Ben. ..."). Steps are +, -, * k, / k with small
  operands, every intermediate value inside [1, max_value], divisions exact, so that a
  ~2M-parameter model can learn the arithmetic in minutes. Digits are single tokens.
- The verbose CoT wraps the decisive content (the start value, each step's action and its
  equation "12 + 7 = 19" written whole, the conclusion "the answer is 14") in formulaic
  filler: narration, hedges, restatements, re-checks that say "is" instead of "=".
- keep_spans mark the decisive content; key_spans grade it: the equations and the conclusion
  are key, the restated start value and step actions are not (the question holds them). The
  paper's annotations are fine-grained; a binary label ties an equation with a restated
  action, and at ratios just under the decisive share the compressor then cut equations
  (89% of 5-step 0.4 targets lost one) while keeping the restatements.
- A share of the steps (`bare_step_share`) is written as the bare equation, without its
  restated action ("Then 26 - 5 = 21."). With every action restated the tiny model learned
  to read a step's result off the action, and compressed CoTs, which drop actions first, came
  out with wrong arithmetic (README, Choices: bare steps).
- The knob `filler` is the target share of CoT
  characters spent on filler sentences at difficulty 3; `filler_slope` lowers it by that
  much per extra step, so the kept share grows with difficulty: at ratio 0.2 the easy
  problems still fit but hard ones lose equations, at 0.4 nearly everything fits. That is
  what makes budgets matter and gives POLICY mode something to learn.
"""
import os
import random
import re
import time

from common import write_jsonl
from data import DEFAULT_DATA_DIR, PROMPT_PREFIX, answer_text
from tokenizer import load_tokenizer, train_tokenizer

# -----------------------------------------------------------------------------
# config (module globals; configurator.py overrides them from a config file / --key=value)
out_dir = DEFAULT_DATA_DIR  # where the splits and tokenizer/ go
seed = 1337                 # corpus seed (each split has its own stream)
n_train, n_val, n_test, n_sft_pool, n_rl_pool = 20000, 500, 300, 2000, 1000  # split sizes
min_steps, max_steps = 1, 5  # difficulty range (number of steps), balanced
filler = 0.72               # target filler share of CoT chars at difficulty 3
filler_slope = 0.08         # filler share drops by this per extra step
bare_step_share = 0.0       # chance a step is written as its bare equation (BARE_STEP_SENTENCES)
max_value = 99              # every intermediate value is in [1, max_value]
max_operand = 20            # largest number added or subtracted in one step
vocab_size = 2048           # tokenizer size including the 11 special tokens
tokenizer_docs = 6000       # train records the BPE is trained on (speed)

SPLITS = ['test', 'val', 'sft_pool', 'rl_pool', 'train']  # generation order: test never moves with n_train


# -----------------------------------------------------------------------------
# synthetic corpus: word lists and templates

NAMES = [('Mia', 'she'), ('Ben', 'he'), ('Lily', 'she'), ('Sam', 'he'), ('Emma', 'she'), ('Noah', 'he'),
         ('Ava', 'she'), ('Leo', 'he'), ('Zoe', 'she'), ('Max', 'he'), ('Ella', 'she'), ('Jack', 'he'),
         ('Ruby', 'she'), ('Tom', 'he'), ('Nora', 'she'), ('Eli', 'he'), ('Ivy', 'she'), ('Owen', 'he'),
         ('Lucy', 'she'), ('Finn', 'he'), ('Anna', 'she'), ('Luke', 'he'), ('Sara', 'she'), ('Adam', 'he'),
         ('Maya', 'she'), ('Ryan', 'he'), ('Kate', 'she'), ('Dan', 'he'), ('Rosa', 'she'), ('Omar', 'he')]
OBJECTS = ['apples', 'marbles', 'stickers', 'pencils', 'cookies', 'books', 'cards', 'shells', 'coins',
           'stamps', 'balloons', 'candies', 'crayons', 'eggs', 'flowers', 'toy cars', 'beads', 'rocks',
           'buttons', 'oranges', 'muffins', 'tickets', 'blocks', 'feathers', 'paper cranes']
# step phrases: what the subject does, used verbatim in the question and in the CoT;
# {b} operand, {k} factor, {obj} objects, {other} a second person, {pos} his/her
ADD_PHRASES = ['buys {b} more {obj}', 'finds {b} more {obj}', 'gets {b} more {obj} from {other}',
               'picks up {b} more {obj}', 'wins {b} more {obj}', 'receives {b} {obj} from {other}',
               'makes {b} more {obj}', 'collects {b} more {obj}']
SUB_PHRASES = ['gives {b} {obj} to {other}', 'loses {b} {obj}', 'sells {b} {obj}', 'gives away {b} {obj}',
               'uses {b} {obj}', 'trades {b} {obj} to {other}', 'drops {b} {obj}']
MUL_PHRASES = ['ends up with {k} times as many {obj}', 'makes {pos} pile {k} times as big',
               'gets {k} times as many {obj}']
DIV_PHRASES = ['splits the {obj} into {k} equal piles and keeps one pile', 'keeps one of {k} equal parts',
               'shares them equally in {k} groups and keeps one group']
OP_SYMBOL = {'add': '+', 'sub': '-', 'mul': '*', 'div': '/'}
OP_WORD = {'add': 'plus', 'sub': 'minus', 'mul': 'times', 'div': 'divided by'}
STEP_CONNECTORS = ['Then {s}', 'After that, {s}', 'Next, {s}', 'Later, {s}']
QUESTION_ENDINGS = ['How many {obj} does {name} have now?', 'How many {obj} does {name} have at the end?',
                    'How many {obj} does {name} have in the end?']
# decisive sentences: kept parts in [[ ]] or << >>, the rest is glue that is dropped. << >> marks
# the key parts (each step's equation, the conclusion): what a reader who has the question
# cannot rebuild. [[ ]] parts restate the question (the start value, each step's action).
START_SENTENCES = ['[[{name} starts with {a} {obj}]].', '[[{name} has {a} {obj} at the start]].',
                   'At first [[{name} has {a} {obj}]].']
STEP_SENTENCES = ['[[{S} {phrase}]], so <<{eq}>>.', '[[{S} {phrase}]]: <<{eq}>>.',
                  'Then [[{s} {phrase}]], which gives <<{eq}>>.']
# a bare step states only its equation (the reader takes the action from the question). Without
# them the tiny model learned to compute a step's result from its restated action, not from
# "a op b =": teacher-forced on correct compressed CoTs, an equation whose action the compressor
# had dropped came out wrong 22% of the time against 3% with the action kept
BARE_STEP_SENTENCES = ['<<{eq}>>.', 'Then <<{eq}>>.', 'Next, <<{eq}>>.']
CONCLUSION_SENTENCES = ['So <<the answer is {ans}>>.', 'Therefore, <<the answer is {ans}>>.',
                        'That means <<the answer is {ans}>>.']
# filler pools per slot (never an "=" sign: equations only live in kept spans)
INTRO_FILLERS = ['Okay, let me think about this.', 'Alright, let me work through this step by step.',
                 'Let me read the problem carefully.', 'Hmm, this is about keeping track of a count.',
                 'So I need to track how many {obj} {name} has.', 'Okay, so this is a problem with a few steps.',
                 'Let me start from the beginning.', 'I will go one step at a time.']
PRE_FILLERS = ['So now I need to figure out how many {obj} {s} has after that.', 'Let me look at what happens next.',
               'Now I need to handle the next part.', 'Wait, there is another change to the count.',
               'Let me keep going.', 'Okay, the problem says something else happens.',
               'Hmm, I should be careful with this part.', 'Next I need the new number of {obj}.']
POST_FILLERS = ['Hmm, let me double-check: {x} {opw} {y} is {z}, yes.', 'Wait, is that right? {x} {opw} {y} is {z}. Yes.',
                'So now {s} has {z} {obj}.', 'Okay, that makes sense.', 'Good, that gives {z} {obj} so far.',
                'Let me verify: {x} {opw} {y} gives {z}, correct.', 'That seems right.',
                'Hmm, so the count is {z} now.']
FINAL_FILLERS = ['Let me go over it once more to be sure.', 'Everything checks out.', 'I think that is it.',
                 'Let me make sure I did not skip a step.', 'Okay, I am fairly confident now.']


# -----------------------------------------------------------------------------
# synthetic corpus: generation

def _fill_marked(template, **kw):
    """Format a sentence template whose kept parts are marked [[...]] or <<...>> (key); return
    (text, spans) with spans [start, end, is_key] as char offsets into text."""
    text, spans, opener = '', [], None
    for part in re.split(r'(\[\[|\]\]|<<|>>)', template):
        if part in ('[[', '<<'):
            opener = part
            continue
        if part in (']]', '>>'):
            opener = None
            continue
        part = part.format(**kw)
        if opener:
            spans.append([len(text), len(text) + len(part), opener == '<<'])
        text += part
    return text, spans


def _sample_steps(rng, d, max_value, max_operand):
    """Start value and d steps (op, operand, result), every value in [1, max_value]."""
    while True:
        value = rng.randint(2, min(30, max_value))
        steps = []
        for _ in range(d):
            options = []  # (op, operand) choices that keep the value in range, weighted by repetition
            b_add = rng.randint(1, max_operand)
            if value + b_add <= max_value:
                options += [('add', b_add)] * 3
            if value >= 2:
                options += [('sub', rng.randint(1, min(max_operand, value - 1)))] * 3
            ks = [k for k in range(2, 6) if value * k <= max_value]
            if ks:
                options += [('mul', rng.choice(ks))] * 1
            ks = [k for k in range(2, 6) if value % k == 0 and value // k >= 1]
            if ks:
                options += [('div', rng.choice(ks))] * 2
            if not options:
                break
            op, b = rng.choice(options)
            result = {'add': value + b, 'sub': value - b, 'mul': value * b, 'div': value // b}[op]
            steps.append((op, b, value, result))
            value = result
        if len(steps) == d:
            return steps


def make_problem(rng, d, filler=0.68, filler_slope=0.04, max_value=99, max_operand=20, bare_step_share=0.0):
    """One annotated problem with d steps: dict(question, cot, answer, keep_spans, difficulty).
    bare_step_share: the chance that a step is written as its bare equation (BARE_STEP_SENTENCES);
    drawn from a stream seeded by the question, so the questions (and the main stream) do not
    depend on it."""
    (name, s), obj = rng.choice(NAMES), rng.choice(OBJECTS)
    pos = 'her' if s == 'she' else 'his'
    others = [n for n, _ in NAMES if n != name]
    steps = _sample_steps(rng, d, max_value, max_operand)
    start, ans = steps[0][2], steps[-1][3]
    phrase_pool = {'add': ADD_PHRASES, 'sub': SUB_PHRASES, 'mul': MUL_PHRASES, 'div': DIV_PHRASES}
    phrases = []
    for op, b, _, _ in steps:
        phrases.append(rng.choice(phrase_pool[op]).format(b=b, k=b, obj=obj, other=rng.choice(others), pos=pos))

    # question: every given stated once
    q = [f"{name} has {start} {obj}."]
    for i, phrase in enumerate(phrases):
        lead = f"{s.capitalize()}" if i == 0 else rng.choice(STEP_CONNECTORS).format(s=s)
        q.append(f"{lead} {phrase}.")
    q.append(rng.choice(QUESTION_ENDINGS).format(obj=obj, name=name))
    question = ' '.join(q)

    # CoT skeleton: slots in reading order, each a list of (sentence, spans, is_filler)
    fmt = dict(name=name, s=s, obj=obj)
    bare_rng = random.Random(question)
    slots = [[], [_fill_marked(rng.choice(START_SENTENCES), a=start, **fmt)]]  # intro fillers, start value
    filler_slots = {0: rng.sample(INTRO_FILLERS, 4)}
    for i, ((op, b, x, z), phrase) in enumerate(zip(steps, phrases)):
        eq = f"{x} {OP_SYMBOL[op]} {b} = {z}"
        template = rng.choice(STEP_SENTENCES)
        if bare_rng.random() < bare_step_share:
            template = bare_rng.choice(BARE_STEP_SENTENCES)
        sent = _fill_marked(template, S=s.capitalize(), s=s, phrase=phrase, eq=eq)
        pre, post = len(slots), len(slots) + 2
        slots += [[], [sent], []]
        vals = dict(x=x, y=b, z=z, opw=OP_WORD[op], **fmt)
        filler_slots[pre] = [t.format(**vals) for t in rng.sample(PRE_FILLERS, 2)]
        filler_slots[post] = [t.format(**vals) for t in rng.sample(POST_FILLERS, 3)]
    filler_slots[len(slots)] = rng.sample(FINAL_FILLERS, 3)
    slots += [[], [_fill_marked(rng.choice(CONCLUSION_SENTENCES), ans=ans)]]
    for k in filler_slots:
        filler_slots[k] = [t.format(**fmt) for t in filler_slots[k]]

    # add filler sentences in random order until their char share reaches the target;
    # the target drops by filler_slope per step above 3 so hard problems keep more
    target = min(0.95, max(0.0, filler - filler_slope * (d - 3)))
    decisive_chars = sum(len(t) + 1 for slot in slots for t, _ in slot)
    candidates = [(k, t) for k, ts in filler_slots.items() for t in ts]
    rng.shuffle(candidates)
    chosen, filler_chars = set(), 0
    for k, t in candidates:
        if filler_chars >= target * (filler_chars + decisive_chars):
            break
        chosen.add((k, t))
        filler_chars += len(t) + 1

    cot, keep_spans, key_spans = '', [], []
    for k, slot in enumerate(slots):
        if k in filler_slots:  # keep pool order inside a slot (stable, formulaic)
            slot = [(t, []) for t in filler_slots[k] if (k, t) in chosen] + slot
        for t, spans in slot:
            if cot:
                cot += ' '
            keep_spans += [[len(cot) + a, len(cot) + b] for a, b, _ in spans]
            key_spans += [[len(cot) + a, len(cot) + b] for a, b, key in spans if key]
            cot += t
    return dict(question=question, cot=cot, answer=str(ans), keep_spans=keep_spans, key_spans=key_spans,
                difficulty=d)


def generate_corpus(sizes, seed=1337, min_steps=1, max_steps=5, **problem_kw):
    """All splits, deterministic in seed, no question shared between splits.
    sizes: dict split -> count. Difficulties cycle min..max so they are exactly balanced.
    Returns dict split -> list of records."""
    seen, corpus = set(), {}
    for split in [s for s in SPLITS if s in sizes] + [s for s in sizes if s not in SPLITS]:
        rng = random.Random(f"extra-cot-{seed}-{split}")  # str seeds are hashed stably (sha512)
        records, duplicates = [], 0
        while len(records) < sizes[split]:
            d = min_steps + len(records) % (max_steps - min_steps + 1)
            rec = make_problem(rng, d, **problem_kw)
            if rec['question'] in seen:
                duplicates += 1
                if duplicates > 100 * sizes[split] + 1000:
                    raise RuntimeError(f"split {split}: cannot find enough distinct questions")
                continue
            seen.add(rec['question'])
            records.append({'id': f"{split}-{len(records):05d}", **rec})
        corpus[split] = records
    return corpus


# -----------------------------------------------------------------------------
# statistics, tokenizer texts, the whole build

def corpus_stats(records, tok):
    """Per-difficulty counts, mean CoT / question tokens, share of CoT tokens in keep spans."""
    by_d, cot_tokens, q_tokens, kept_tokens = {}, {}, {}, {}
    for rec in records:
        d = rec['difficulty']
        by_d[d] = by_d.get(d, 0) + 1
        ids, offsets = tok.encode_with_offsets(rec['cot'])
        kept = sum(1 for s, e in offsets if any(a < e and s < b for a, b in rec['keep_spans']))
        cot_tokens[d] = cot_tokens.get(d, 0) + len(ids)
        kept_tokens[d] = kept_tokens.get(d, 0) + kept
        q_tokens[d] = max(q_tokens.get(d, 0), len(tok.encode(rec['question'])))
    return {d: {'n': by_d[d], 'mean_cot_tokens': cot_tokens[d] / by_d[d], 'max_question_tokens': q_tokens[d],
                'kept_share': kept_tokens[d] / max(cot_tokens[d], 1)} for d in sorted(by_d)}


def tokenizer_training_texts(records):
    """Texts the BPE learns from: questions, CoTs, answers, and the prompt boilerplate."""
    for rec in records:
        yield rec['question']
        yield rec['cot']
        yield answer_text(rec['answer'])
        yield PROMPT_PREFIX + 'system\nYou are a helpful assistant.\nuser\nassistant\n'


def build_corpus(out_dir=DEFAULT_DATA_DIR, seed=1337, sizes=None, vocab_size=2048, tokenizer_docs=6000,
                 verbose=True, **problem_kw):
    """Generate all splits, train the tokenizer on (a prefix of) train, write everything to
    out_dir. Returns (corpus, tokenizer, stats)."""
    t0 = time.time()
    sizes = sizes or {'train': 20000, 'val': 500, 'test': 300, 'sft_pool': 2000, 'rl_pool': 1000}
    corpus = generate_corpus(sizes, seed=seed, **problem_kw)
    t1 = time.time()
    tok = train_tokenizer(tokenizer_training_texts(corpus['train'][:tokenizer_docs] or corpus['test']), vocab_size)
    t2 = time.time()
    for split, records in corpus.items():
        write_jsonl(os.path.join(out_dir, f'{split}.jsonl'), records)
    tok.save(os.path.join(out_dir, 'tokenizer'))
    load_tokenizer.cache_clear()
    stats = corpus_stats(corpus['val'] or corpus['test'], tok)
    if verbose:
        print(f"wrote {', '.join(f'{s} {len(r)}' for s, r in corpus.items())} records and a "
              f"{tok.vocab_size}-token tokenizer to {out_dir} "
              f"(generate {t1 - t0:.1f}s, tokenizer {t2 - t1:.1f}s, total {time.time() - t0:.1f}s)")
        print("stats on val: difficulty | n | mean CoT tokens | max question tokens | kept share of CoT tokens")
        for d, s in stats.items():
            print(f"  {d} | {s['n']} | {s['mean_cot_tokens']:.1f} | {s['max_question_tokens']} | {s['kept_share']:.3f}")
        n = sum(s['n'] for s in stats.values())
        mean_len = sum(s['mean_cot_tokens'] * s['n'] for s in stats.values()) / n
        kept = sum(s['kept_share'] * s['mean_cot_tokens'] * s['n'] for s in stats.values()) / (mean_len * n)
        print(f"  all | {n} | {mean_len:.1f} | - | {kept:.3f}")
    return corpus, tok, stats


def main():
    sizes = {'test': n_test, 'val': n_val, 'sft_pool': n_sft_pool, 'rl_pool': n_rl_pool, 'train': n_train}
    build_corpus(out_dir, seed, sizes, vocab_size, tokenizer_docs, min_steps=min_steps, max_steps=max_steps,
                 filler=filler, filler_slope=filler_slope, max_value=max_value, max_operand=max_operand,
                 bare_step_share=bare_step_share)


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
