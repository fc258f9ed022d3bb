"""
Data for Extra-CoT: the embedded synthetic annotated math corpus, the tokenizer, the Qwen3
chat format with <think> and the <COMP_xx> budget tokens, the SFT example builder with
loss masks, loaders for real benchmarks, a rule-based CoT annotator, and SFT batching.

Write the corpus and the tokenizer (about 10-20 s on 2 CPU cores):

    python data.py                                  # -> out/data/{train,val,test,sft_pool,rl_pool}.jsonl
    python data.py --n_train=5000 --filler=0.6      #    and out/data/tokenizer/
    python data.py config/tiny_data.py

Use it:

    from data import load_tokenizer, render_prompt, render_sft_example, parse_response
    tok = load_tokenizer()                          # or a Qwen3 folder / hub id
    ids, loss_mask = render_sft_example(question, cot, answer_text('19'), '0.4', tok)

Corpus record (one JSON object a line):
    {"id", "question", "cot", "answer" (gold, e.g. "19"), "keep_spans": [[start, end], ...]
     (char offsets into cot, end exclusive, sorted, disjoint), "difficulty" (number of steps)}

Design of the synthetic corpus (it has to carry the whole CPU speedrun):
- A problem is a chain of d steps on one count ("Mia has 12 shells. She buys 7 more
  shells. Then she gives 5 shells to Ben. ..."). Steps are +, -, * k, / k with small
  operands, every intermediate value inside [1, max_value], divisions exact, so that a
  ~2M-parameter model can learn the arithmetic in minutes. Digits are single tokens.
- The verbose CoT wraps the decisive content (the start value, each step's action and its
  equation "12 + 7 = 19" written whole, the conclusion "the answer is 14") in formulaic
  filler: narration, hedges, restatements, re-checks that say "is" instead of "=".
- keep_spans mark the decisive content. The knob `filler` is the target share of CoT
  characters spent on filler sentences at difficulty 3; `filler_slope` lowers it by that
  much per extra step, so the kept share grows with difficulty: at ratio 0.2 the easy
  problems still fit but hard ones lose equations, at 0.4 nearly everything fits. That is
  what makes budgets matter and gives POLICY mode something to learn.

Decisions recorded here:
- The trained tokenizer mirrors Qwen's: NFC, the Qwen2 split regex (each digit alone),
  byte-level BPE, specials <|endoftext|> <|im_start|> <|im_end|> first, then <think>
  </think> (added but not "special", as in Qwen3, so skip_special_tokens keeps them),
  then the six budget tokens (special).
- The saved tokenizer_config.json carries CHAT_TEMPLATE: Qwen3's format plus the budget
  mirror, so apply_chat_template (transformers, vLLM) renders exactly `render_prompt` for
  every mode (Qwen3's own template would drop the mirrored token).
"""
import functools
import json
import os
import random
import re
import time

import torch

from grading import find_boxed

# -----------------------------------------------------------------------------
# modes, budget tokens, chat constants

MODES = ['none', '0.2', '0.4', '0.6', '0.8', '1.0', 'auto']  # 'none' = no budget token at all
BUDGETS = [0.2, 0.4, 0.6, 0.8, 1.0]  # the fixed compression ratios
BUDGET_TOKENS = {'0.2': '<COMP_20>', '0.4': '<COMP_40>', '0.6': '<COMP_60>', '0.8': '<COMP_80>',
                 '1.0': '<COMP_100>', 'auto': '<COMP_AUTO>'}
FIXED_MODES = ['0.2', '0.4', '0.6', '0.8', '1.0']  # modes whose budget token is mirrored in the prompt
DEFAULT_DATA_DIR = 'out/data'  # where `python data.py` writes the corpus and tokenizer
SPLITS = ['test', 'val', 'sft_pool', 'rl_pool', 'train']  # generation order: test never moves with n_train
PAD_TOKEN, IM_START, IM_END = '<|endoftext|>', '<|im_start|>', '<|im_end|>'
THINK_START, THINK_END = '<think>', '</think>'
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, THINK_START, THINK_END] + list(BUDGET_TOKENS.values())
PROMPT_PREFIX = "Please reason step by step, and put your final answer within \\boxed{}.\n"
IGNORE_INDEX = -100  # target value that F.cross_entropy ignores
# Qwen2/Qwen3 pre-tokenizer split: contractions, letters with one leading non-letter,
# ONE digit at a time, punctuation runs, newlines, whitespace
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                      r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def mode_name(mode):
    """Normalize a mode: 0.4 -> '0.4', '1' -> '1.0', 'auto' -> 'auto'. Errors name the value."""
    if isinstance(mode, str) and mode in MODES:
        return mode
    try:
        name = f"{float(mode):.1f}"
    except (TypeError, ValueError):
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES} or a ratio in {BUDGETS}") from None
    if name not in FIXED_MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES} or a ratio in {BUDGETS}")
    return name


def answer_text(gold):
    """The answer written after </think>."""
    return f"The answer is \\boxed{{{gold}}}."


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
# decisive sentences: kept parts in [[ ]], the rest is glue that is dropped
START_SENTENCES = ['[[{name} starts with {a} {obj}]].', '[[{name} has {a} {obj} at the start]].',
                   'At first [[{name} has {a} {obj}]].']
STEP_SENTENCES = ['[[{S} {phrase}]], so [[{eq}]].', '[[{S} {phrase}]]: [[{eq}]].',
                  'Then [[{s} {phrase}]], which gives [[{eq}]].']
CONCLUSION_SENTENCES = ['So [[the answer is {ans}]].', 'Therefore, [[the answer is {ans}]].',
                        'That means [[the answer is {ans}]].']
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
    """Format a sentence template whose kept parts are marked [[...]]; return (text, spans)
    with spans as char offsets into text."""
    text, spans = '', []
    for i, part in enumerate(re.split(r'\[\[|\]\]', template)):
        part = part.format(**kw)
        if i % 2 == 1:  # inside [[ ]]
            spans.append([len(text), len(text) + len(part)])
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


def make_problem(rng, d, filler=0.68, filler_slope=0.04, max_value=99, max_operand=20):
    """One annotated problem with d steps: dict(question, cot, answer, keep_spans, difficulty)."""
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
    slots = [[], [_fill_marked(rng.choice(START_SENTENCES), a=start, **fmt)]]  # intro fillers, start value
    filler_slots = {0: rng.sample(INTRO_FILLERS, 4)}
    for i, ((op, b, x, z), phrase) in enumerate(zip(steps, phrases)):
        eq = f"{x} {OP_SYMBOL[op]} {b} = {z}"
        sent = _fill_marked(rng.choice(STEP_SENTENCES), S=s.capitalize(), s=s, phrase=phrase, eq=eq)
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

    cot, keep_spans = '', []
    for k, slot in enumerate(slots):
        if k in filler_slots:  # keep pool order inside a slot (stable, formulaic)
            slot = [(t, []) for t in filler_slots[k] if (k, t) in chosen] + slot
        for t, spans in slot:
            if cot:
                cot += ' '
            keep_spans += [[len(cot) + a, len(cot) + b] for a, b in spans]
            cot += t
    return dict(question=question, cot=cot, answer=str(ans), keep_spans=keep_spans, difficulty=d)


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


def validate_record(rec, where='record'):
    """Check one corpus record's keys and keep_spans; raise ValueError naming `where`."""
    for key in ('id', 'question', 'cot', 'answer', 'keep_spans'):
        if key not in rec:
            raise ValueError(f"{where}: missing key '{key}'")
    prev_end = 0
    for span in rec['keep_spans']:
        if not (isinstance(span, (list, tuple)) and len(span) == 2):
            raise ValueError(f"{where}: keep span {span!r} is not [start, end]")
        a, b = span
        if not (prev_end <= a < b <= len(rec['cot'])):
            raise ValueError(f"{where}: keep span {span!r} is out of order, empty or outside the cot "
                             f"(length {len(rec['cot'])})")
        prev_end = b


# jsonl I/O lives in common.py (atomic writes, file:line errors); re-exported here for data users
from common import read_jsonl, write_jsonl  # noqa: E402,F401


# -----------------------------------------------------------------------------
# tokenizer

class ChatTokenizer:
    """A thin wrapper around tokenizers.Tokenizer with the ids this project needs."""

    def __init__(self, tk, config=None):
        self.tk = tk
        self.config = dict(config or {})  # the tokenizer_config.json we were loaded from, kept on save
        missing = [t for t in [PAD_TOKEN, IM_START, IM_END, THINK_START, THINK_END] if tk.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks required tokens {missing}")
        self.pad_id = tk.token_to_id(PAD_TOKEN)
        self.eos_id = tk.token_to_id(IM_END)
        self.im_start_id = tk.token_to_id(IM_START)
        self.stop_ids = [self.eos_id, self.pad_id]
        self.think_start_id = tk.token_to_id(THINK_START)
        self.think_end_id = tk.token_to_id(THINK_END)
        self.budget_ids = {mode: tk.token_to_id(t) for mode, t in BUDGET_TOKENS.items()}
        if None in self.budget_ids.values():
            raise ValueError(f"tokenizer lacks budget tokens: {self.budget_ids}")
        self.id_to_budget = {i: mode for mode, i in self.budget_ids.items()}
        self.vocab_size = tk.get_vocab_size(with_added_tokens=True)

    def encode(self, text):
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text):
        """ids and (start, end) char offsets into text, for labelling tokens by keep spans."""
        enc = self.tk.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def decode(self, ids, skip_special_tokens=False):
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, s):
        return self.tk.token_to_id(s)

    def id_to_token(self, i):
        return self.tk.id_to_token(i)

    def __len__(self):
        return self.vocab_size

    def save(self, out_dir):
        """tokenizer.json + tokenizer_config.json + special_tokens_map.json, loadable by
        transformers.AutoTokenizer.from_pretrained(out_dir)."""
        os.makedirs(out_dir, exist_ok=True)
        self.tk.save(os.path.join(out_dir, 'tokenizer.json'))
        added = json.loads(self.tk.to_str())['added_tokens']
        config = dict(self.config)
        config.update({
            'tokenizer_class': config.get('tokenizer_class', 'PreTrainedTokenizerFast'),
            'eos_token': IM_END, 'pad_token': PAD_TOKEN,
            'bos_token': config.get('bos_token'), 'unk_token': config.get('unk_token'),
            'model_max_length': config.get('model_max_length', 32768),
            'clean_up_tokenization_spaces': False, 'split_special_tokens': False,
            'chat_template': CHAT_TEMPLATE,  # ours, also over a loaded Qwen3 template
            'added_tokens_decoder': {str(t['id']): {k: t[k] for k in ('content', 'lstrip', 'normalized',
                                                                     'rstrip', 'single_word', 'special')}
                                     for t in added},
        })
        extra = list(config.get('additional_special_tokens') or [])
        config['additional_special_tokens'] = extra + [t for t in BUDGET_TOKENS.values() if t not in extra]
        with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
        with open(os.path.join(out_dir, 'special_tokens_map.json'), 'w') as f:
            json.dump({'eos_token': IM_END, 'pad_token': PAD_TOKEN,
                       'additional_special_tokens': config['additional_special_tokens']}, f, indent=2)


def _make_think_tokens_non_special(tk):
    # Qwen3 registers <think> </think> as added tokens with special=false: decoding with
    # skip_special_tokens=True keeps them. BpeTrainer marks all its special_tokens special,
    # so flip the flag in the serialized form and reload.
    import tokenizers
    state = json.loads(tk.to_str())
    for t in state['added_tokens']:
        if t['content'] in (THINK_START, THINK_END):
            t['special'] = False
    return tokenizers.Tokenizer.from_str(json.dumps(state))


def train_tokenizer(texts, vocab_size=2048):
    """Byte-level BPE with Qwen's pre-tokenizer (digits one by one) and this project's
    special tokens at ids 0..10. vocab_size counts everything. Returns a ChatTokenizer."""
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    tk = tokenizers.Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT_PATTERN), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    return ChatTokenizer(_make_think_tokens_non_special(tk))


def _add_missing_budget_tokens(tk):
    from tokenizers import AddedToken
    missing = [t for t in BUDGET_TOKENS.values() if tk.token_to_id(t) is None]
    if missing:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return missing


@functools.lru_cache(maxsize=8)
def load_tokenizer(path_or_hub_id=DEFAULT_DATA_DIR + '/tokenizer'):
    """A ChatTokenizer from a folder (or a tokenizer.json file) or a hub model id; a real
    Qwen3 tokenizer gets the six budget tokens appended when it lacks them. Cached: treat
    the result as read-only."""
    import tokenizers
    path = path_or_hub_id
    if os.path.isfile(path):
        folder, file = os.path.dirname(path), path
    elif os.path.isdir(path):
        folder, file = path, os.path.join(path, 'tokenizer.json')
    elif path.count('/') == 1 and not path.startswith(('.', '/')):
        from huggingface_hub import snapshot_download
        try:  # honours HF_HUB_OFFLINE: then only the local cache is looked at
            folder = snapshot_download(path, allow_patterns=['tokenizer.json', 'tokenizer_config.json',
                                                             'special_tokens_map.json'])
        except Exception as e:
            raise FileNotFoundError(f"tokenizer '{path}': not a local path and the hub download failed "
                                    f"({type(e).__name__}: {e})") from None
        file = os.path.join(folder, 'tokenizer.json')
    else:
        raise FileNotFoundError(f"tokenizer '{path}' not found (run `python data.py` to build the default)")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no tokenizer.json there")
    tk = tokenizers.Tokenizer.from_file(file)
    _add_missing_budget_tokens(tk)
    config = {}
    config_file = os.path.join(folder, 'tokenizer_config.json')
    if os.path.isfile(config_file):
        with open(config_file) as f:
            config = json.load(f)
    config.pop('added_tokens_decoder', None)  # rebuilt on save from the live tokenizer
    return ChatTokenizer(tk, config)


# -----------------------------------------------------------------------------
# chat format

def render_chat(messages, add_generation_prompt=False):
    """Qwen3's chat template (as transformers' apply_chat_template renders it, thinking mode,
    no tools) for system / user / assistant messages. The assistant turns after the last
    user query render as '<think>\\n{reasoning}\\n</think>\\n\\n{content}' where reasoning is
    whatever sits between <think> and </think> in content (text before <think> is dropped);
    earlier assistant turns keep only their final content."""
    out = ''
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get('role') not in ('system', 'user', 'assistant'):
            raise ValueError(f"message {i}: expected a dict with role system/user/assistant, got {m!r}")
    if messages and messages[0]['role'] == 'system':
        out += f"{IM_START}system\n{messages[0]['content']}{IM_END}\n"
    last_query = len(messages) - 1  # the last user turn that is not a tool response
    for i in range(len(messages) - 1, -1, -1):
        c = messages[i].get('content')
        if messages[i]['role'] == 'user' and isinstance(c, str) and not (
                c.startswith('<tool_response>') and c.endswith('</tool_response>')):
            last_query = i
            break
    for i, m in enumerate(messages):
        content = m['content'] if isinstance(m.get('content'), str) else ''
        if m['role'] == 'user' or (m['role'] == 'system' and i > 0):
            out += f"{IM_START}{m['role']}\n{content}{IM_END}\n"
        elif m['role'] == 'assistant':
            reasoning = m.get('reasoning_content') if isinstance(m.get('reasoning_content'), str) else None
            if reasoning is None:
                reasoning = ''
                if THINK_END in content:
                    reasoning = content.split(THINK_END)[0].rstrip('\n').split(THINK_START)[-1].lstrip('\n')
                    content = content.split(THINK_END)[-1].lstrip('\n')
            if i > last_query and (i == len(messages) - 1 or reasoning):
                out += f"{IM_START}assistant\n{THINK_START}\n{reasoning.strip(chr(10))}\n{THINK_END}\n\n{content.lstrip(chr(10))}"
            else:
                out += f"{IM_START}assistant\n{content}"
            out += f"{IM_END}\n"
    if add_generation_prompt:
        out += f"{IM_START}assistant\n"
    return out


# The chat template saved with every tokenizer (tokenizer_config.json), so that transformers'
# apply_chat_template and vLLM's chat endpoint build the prompts the model was trained on.
# It renders as render_chat above (Qwen3's template for system / user / assistant turns,
# reasoning_content, enable_thinking=False), plus one rule: when the last message is a user
# turn ending with a fixed budget token, the generation prompt mirrors it, as render_prompt
# does. <COMP_AUTO> and no token get the bare '<|im_start|>assistant\n'. Tools and the
# 'tool' role are not supported (the models here never saw them): it raises.
CHAT_TEMPLATE = (
    "{%- set budgets = " + json.dumps([BUDGET_TOKENS[m] for m in FIXED_MODES]) + " %}\n"
    "{%- if tools %}{{ raise_exception('this model was not trained with tools') }}{% endif %}\n"
    "{%- set ns = namespace(found=false, last_query=messages|length - 1, budget='') %}\n"
    "{%- for m in messages[::-1] %}\n"  # the last user turn that is not a tool response
    "  {%- if not ns.found and m.role == 'user' and m.content is string and not"
    " (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) %}\n"
    "    {%- set ns.found = true %}{%- set ns.last_query = (messages|length - 1) - loop.index0 %}\n"
    "  {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for m in messages %}\n"
    "  {%- if m.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unsupported role ' + m.role) }}{% endif %}\n"
    "  {%- set content = m.content if m.content is string else '' %}\n"
    "  {%- if m.role == 'system' and loop.first %}\n"
    "    {{- '<|im_start|>system\\n' + m.content + '<|im_end|>\\n' }}\n"
    "  {%- elif m.role != 'assistant' %}\n"
    "    {{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' }}\n"
    "  {%- else %}\n"
    "    {%- set reasoning = '' %}\n"
    "    {%- if m.reasoning_content is string %}\n"
    "      {%- set reasoning = m.reasoning_content %}\n"
    "    {%- elif '</think>' in content %}\n"
    "      {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "      {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "    {%- endif %}\n"
    "    {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}\n"
    "      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}\n"
    "    {%- else %}\n"
    "      {{- '<|im_start|>assistant\\n' + content }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_end|>\\n' }}\n"
    "  {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "  {{- '<|im_start|>assistant\\n' }}\n"
    "  {%- set last = messages[-1] if messages else {} %}\n"
    "  {%- if last.role == 'user' and last.content is string %}\n"
    "    {%- for b in budgets %}{%- if last.content.rstrip().endswith(b) %}{%- set ns.budget = b %}{%- endif %}"
    "{%- endfor %}\n"
    "  {%- endif %}\n"
    "  {{- ns.budget }}\n"
    "  {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "    {{- ('\\n' if ns.budget else '') + '<think>\\n\\n</think>\\n\\n' }}\n"
    "  {%- endif %}\n"
    "{%- endif %}\n"
)


def user_content(question, mode):
    """The user turn: instruction, question, and the budget token unless mode is 'none'."""
    mode = mode_name(mode)
    text = PROMPT_PREFIX + question
    return text if mode == 'none' else f"{text} {BUDGET_TOKENS[mode]}"


def render_prompt(question, mode, system=None):
    """The generation prompt. Fixed modes end with the mirrored budget token (forced, so the
    model cannot ignore it); 'auto' and 'none' end at '<|im_start|>assistant\\n'."""
    mode = mode_name(mode)
    messages = ([{'role': 'system', 'content': system}] if system is not None else [])
    messages.append({'role': 'user', 'content': user_content(question, mode)})
    prompt = render_chat(messages, add_generation_prompt=True)
    return prompt + BUDGET_TOKENS[mode] if mode in FIXED_MODES else prompt


def render_completion(cot, answer, mode, chosen=None):
    """What the assistant writes after render_prompt(...), up to and including <|im_end|>."""
    mode = mode_name(mode)
    body = f"{THINK_START}\n{cot}\n{THINK_END}\n\n{answer}{IM_END}"
    if mode == 'none':
        return body
    if mode == 'auto':
        if chosen is None or mode_name(chosen) not in FIXED_MODES:
            raise ValueError(f"mode 'auto' needs chosen in {FIXED_MODES}, got {chosen!r}")
        return BUDGET_TOKENS[mode_name(chosen)] + '\n' + body
    return '\n' + body


def render_sft_example(question, cot, answer, mode, tokenizer=None, chosen=None, system=None):
    """(ids, loss_mask): prompt and completion encoded separately and concatenated, so the
    prompt ids are exactly those generation starts from; mask 1 on completion tokens."""
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    prompt_ids = tok.encode(render_prompt(question, mode, system))
    completion_ids = tok.encode(render_completion(cot, answer, mode, chosen))
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def record_to_sft_example(rec, tokenizer):
    """render_sft_example from a record: question, cot, mode (default 'none'), chosen (for
    'auto'), response (else answer_text(answer)), optional system."""
    where = f"record {rec.get('id', '?')!s}"
    for key in ('question', 'cot'):
        if key not in rec:
            raise KeyError(f"{where}: missing key '{key}'")
    if rec.get('response') is None and 'answer' not in rec:
        raise KeyError(f"{where}: missing key 'answer' (or 'response')")
    response = rec.get('response') or answer_text(rec['answer'])
    try:
        return render_sft_example(rec['question'], rec['cot'], response, rec.get('mode', 'none'),
                                  tokenizer, chosen=rec.get('chosen'), system=rec.get('system'))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def parse_response(tok, ids):
    """Split generated ids: budget (mode of the first token if it is a budget token),
    think_closed, think_tokens (ids strictly between <think> and </think>), answer_text
    (after </think>, specials removed), text (full decode)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    budget = tok.id_to_budget.get(ids[0]) if ids else None
    start = ids.index(tok.think_start_id) if tok.think_start_id in ids else -1
    end = ids.index(tok.think_end_id, start + 1) if start >= 0 and tok.think_end_id in ids[start + 1:] else -1
    closed = end >= 0
    return {
        'budget': budget,
        'think_closed': closed,
        'think_tokens': end - start - 1 if closed else None,
        'answer_text': tok.decode(ids[end + 1:], skip_special_tokens=True).strip() if closed else '',
        'text': tok.decode(ids),
    }


# -----------------------------------------------------------------------------
# real datasets

HUB_DATASETS = {  # short name -> (hub dataset id, subfolder/config hint, default split)
    'gsm8k': ('openai/gsm8k', 'main', 'test'),
    'math500': ('HuggingFaceH4/MATH-500', None, 'test'),
    'amc23': ('math-ai/amc23', None, 'test'),
    'metamath': ('meta-math/MetaMathQA', None, 'train'),
}


def _last_boxed(text):
    """The last \\boxed{..} of a MATH solution, or None."""
    boxes = find_boxed(text)
    return boxes[-1].strip() if boxes else None


def _number_text(x):
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x).strip()


def normalize_benchmark_record(rec, where, index):
    """(id, question, answer[, difficulty]) from GSM8K / MATH / AMC / MetaMathQA / synthetic fields."""
    rid = str(rec.get('id', rec.get('unique_id', index)))
    if 'query' in rec and 'response' in rec:  # MetaMathQA
        m = re.search(r'The answer is:?\s*(.+?)\s*$', rec['response'].strip(), re.S)
        if not m:
            raise ValueError(f"{where}: MetaMathQA response has no 'The answer is:'")
        return {'id': rid, 'question': rec['query'], 'answer': m.group(1).strip().rstrip('.')}
    question = rec.get('question', rec.get('problem'))
    if not isinstance(question, str):
        raise ValueError(f"{where}: no 'question' or 'problem' text field (keys: {sorted(rec)})")
    answer = rec.get('answer')
    if isinstance(answer, str) and '####' in answer:  # GSM8K: rationale, then '#### 42'
        answer = answer.split('####')[-1].strip().replace(',', '')
    if answer is None and isinstance(rec.get('solution'), str):  # MATH without an answer field
        answer = _last_boxed(rec['solution'])
        if answer is None:
            raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"{where}: no 'answer' field (keys: {sorted(rec)})")
    out = {'id': rid, 'question': question, 'answer': _number_text(answer)}
    # difficulty: the synthetic corpus' step count, MATH's 'level' ("Level 3"), for accuracy by difficulty
    level = rec.get('difficulty', rec.get('level'))
    if level is not None:
        m = re.search(r'\d+', str(level))
        out['difficulty'] = int(m.group()) if m else level
    return out


def _hub_files(repo_id, split):
    from huggingface_hub import snapshot_download
    try:  # offline-aware: HF_HUB_OFFLINE=1 reads the cache only
        folder = snapshot_download(repo_id, repo_type='dataset', allow_patterns=['*.jsonl', '*.json', '*.parquet'])
    except Exception as e:
        raise FileNotFoundError(f"dataset '{repo_id}': not in the local cache and the hub download failed "
                                f"({type(e).__name__}: {e})") from None
    files = []
    for root, _, names in os.walk(folder):
        files += [os.path.join(root, n) for n in names if n.endswith(('.jsonl', '.json', '.parquet'))]
    chosen = sorted(f for f in files if split in os.path.basename(f) or f'/{split}/' in f)
    if not chosen:
        raise FileNotFoundError(f"dataset '{repo_id}': no file for split '{split}' among {sorted(files)}")
    return chosen


def _read_records(path):
    """(where, record) pairs from a .jsonl, .json (list or {'data': [...]}) or .parquet file."""
    if path.endswith('.parquet'):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading parquet needs pyarrow (`pip install -r requirements.txt`)") from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    if path.endswith('.json'):
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        data = data.get('data', data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of records or {{'data': [...]}}")
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    out, lineno = [], 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    return out


def load_benchmark(name_or_path, split='test', data_dir=DEFAULT_DATA_DIR):
    """list of dict(id, question, answer) from a local .jsonl/.json/.parquet file, the
    synthetic corpus ('synthetic' -> data_dir/{split}.jsonl), a short name in HUB_DATASETS,
    or a hub dataset id. Any malformed record raises 'file:line: what is wrong'."""
    if name_or_path == 'synthetic':
        paths = [os.path.join(data_dir, f'{split}.jsonl')]
        if not os.path.isfile(paths[0]):
            raise FileNotFoundError(f"{paths[0]} not found: run `python data.py` first")
    elif os.path.isfile(name_or_path):
        paths = [name_or_path]
    elif name_or_path in HUB_DATASETS or name_or_path.count('/') == 1:
        repo_id, sub, default_split = HUB_DATASETS.get(name_or_path, (name_or_path, None, split))
        paths = _hub_files(repo_id, split if name_or_path not in HUB_DATASETS else (split or default_split))
        if sub:
            paths = [p for p in paths if f'/{sub}/' in p] or paths
    else:
        raise FileNotFoundError(f"benchmark '{name_or_path}': not a file, not 'synthetic', not one of "
                                f"{sorted(HUB_DATASETS)}, not a hub id")
    records, seen_ids = [], set()
    for path in paths:
        for where, rec in _read_records(path):
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            r = normalize_benchmark_record(rec, where, f"{os.path.basename(path)}-{len(records)}")
            if r['id'] in seen_ids:  # ids must be unique for per-sample result files
                r['id'] = f"{r['id']}-{len(records)}"
            seen_ids.add(r['id'])
            records.append(r)
    return records


# -----------------------------------------------------------------------------
# rule-based CoT annotator (for real CoTs without spans)

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


# -----------------------------------------------------------------------------
# SFT batching

def pad_batch(examples, pad_id, max_len=None):
    """(x, y) LongTensors [B, T] from (ids, loss_mask) pairs: x[t] = ids[t], y[t] = ids[t+1]
    when mask[t+1] == 1 else -100; right-padded (x with pad_id, y with -100). max_len caps
    T (each example is cut to max_len + 1 ids before shifting)."""
    rows = []
    for i, (ids, mask) in enumerate(examples):
        if len(ids) != len(mask):
            raise ValueError(f"example {i}: {len(ids)} ids but {len(mask)} mask values")
        if max_len is not None:
            ids, mask = ids[:max_len + 1], mask[:max_len + 1]
        rows.append((list(ids), list(mask)))
    T = max(max(len(ids) - 1 for ids, _ in rows), 1)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        if n <= 0:
            continue
        x[r, :n] = torch.tensor(ids[:-1])
        target = torch.tensor(ids[1:])
        y[r, :n] = torch.where(torch.tensor(mask[1:]) == 1, target, IGNORE_INDEX)
    return x, y


def sft_batches(examples, batch_size, seed, rank=0, world_size=1, pad_id=None, max_len=None, sort_pool=0):
    """Infinite, deterministic stream of batches for this rank. Epoch e is a permutation
    seeded by (seed, e); rank r takes positions r, r + world_size, ... of it (disjoint
    shards, equal length: the len % world_size tail of each epoch is skipped). Items carry
    over epoch boundaries so every batch is full. sort_pool > 0 sorts each run of
    sort_pool * batch_size items by length (less padding) and shuffles the batches.
    Yields lists of examples, or pad_batch(...) tensors when pad_id is given."""
    n_per_rank = len(examples) // world_size
    if n_per_rank == 0:
        raise ValueError(f"sft_batches: {len(examples)} examples cannot be sharded over {world_size} ranks")
    if not 0 <= rank < world_size:
        raise ValueError(f"sft_batches: rank {rank} not in [0, {world_size})")
    buffer, epoch = [], 0
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(len(examples), generator=g)[:n_per_rank * world_size]
        buffer += [examples[i] for i in perm[rank::world_size].tolist()]
        epoch += 1
        pool = max(sort_pool, 1) * batch_size
        while len(buffer) >= pool:
            chunk, buffer = buffer[:pool], buffer[pool:]
            batches = [chunk[i:i + batch_size] for i in range(0, pool, batch_size)]
            if sort_pool > 0:
                chunk = sorted(chunk, key=lambda ex: len(ex[0]))
                batches = [chunk[i:i + batch_size] for i in range(0, pool, batch_size)]
                order = torch.randperm(len(batches), generator=g).tolist()
                batches = [batches[i] for i in order]
            for batch in batches:
                yield pad_batch(batch, pad_id, max_len) if pad_id is not None else batch


# -----------------------------------------------------------------------------
# corpus statistics and main

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
    cfg = dict(
        out_dir=DEFAULT_DATA_DIR,  # where the splits and tokenizer/ go
        seed=1337,                 # corpus seed (each split has its own stream)
        n_train=20000, n_val=500, n_test=300, n_sft_pool=2000, n_rl_pool=1000,  # split sizes
        min_steps=1, max_steps=5,  # difficulty range (number of steps), balanced
        filler=0.72,               # target filler share of CoT chars at difficulty 3
        filler_slope=0.08,         # filler share drops by this per extra step
        max_value=99,              # every intermediate value is in [1, max_value]
        max_operand=20,            # largest number added or subtracted in one step
        vocab_size=2048,           # tokenizer size including the 11 special tokens
        tokenizer_docs=6000,       # train records the BPE is trained on (speed)
    )
    configurator = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')
    cfg['__name__'] = 'data_config'
    with open(configurator) as f:
        exec(compile(f.read(), configurator, 'exec'), cfg)  # config files and --key=value onto cfg
    sizes = {s: cfg[f'n_{s}'] for s in SPLITS}
    build_corpus(cfg['out_dir'], cfg['seed'], sizes, cfg['vocab_size'], cfg['tokenizer_docs'],
                 min_steps=cfg['min_steps'], max_steps=cfg['max_steps'], filler=cfg['filler'],
                 filler_slope=cfg['filler_slope'], max_value=cfg['max_value'], max_operand=cfg['max_operand'])


if __name__ == '__main__':
    main()
