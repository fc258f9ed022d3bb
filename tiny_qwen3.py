"""
A tiny random Qwen3 checkpoint shaped like the released ones where it matters for the vocabulary:
Qwen3's real tokenizer files as they ship (151,669 ids, no budget tokens) and an embedding of
151,936 rows (Qwen3 pads its vocabulary), standing in for Qwen/Qwen3-1.7B in the real-tokenizer
smoke run (`TOKENIZER=<dir> bash speedrun.sh --smoke`). The six budget tokens that
tokenizer.load_tokenizer appends get ids 151,669..151,674, inside the padding rows, so the
base stage's train_sft.build_model has to notice them (model.fit_vocab, trained_vocab_size).

    python tiny_qwen3.py --tokenizer=<Qwen3 tokenizer folder> --out_dir=out/qwen3_tiny
    python tiny_qwen3.py --tokenizer=... --out_dir=... --n_layer=1 --n_embd=32   # smoke sizes
"""
import os
import shutil

from model import Qwen3, Qwen3Config

# -----------------------------------------------------------------------------
# config (configurator.py overrides); sizes named as train_sft.py names them
tokenizer = ''                 # a folder with Qwen3's tokenizer.json (tokenizer.qwen3_tokenizer_dir())
out_dir = 'out/qwen3_tiny'     # the checkpoint folder written
vocab_rows = 151936            # Qwen3's embedding rows (its tokenizer uses ids < 151,669)
n_layer = 4                    # transformer blocks (config/tiny_base.py's sizes)
n_embd = 128                   # hidden size
n_head = 4                     # query heads
n_kv_head = 2                  # key/value heads
head_dim = 32                  # per-head width
intermediate = 384             # SwiGLU width
seed = 1337                    # init seed

TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json']
QWEN3_IDS = {'<|endoftext|>': 151643, '<|im_end|>': 151645}  # pad and eos in Qwen3's config.json


def write_checkpoint(tokenizer_dir, out_dir, vocab_rows, sizes, seed):
    """Random weights (model.init_weights) with Qwen3's vocabulary rows, RoPE base and norm eps,
    saved as an HF folder next to an unchanged copy of the tokenizer files."""
    if not os.path.isfile(os.path.join(tokenizer_dir, 'tokenizer.json')):
        raise FileNotFoundError(f'{tokenizer_dir}: no tokenizer.json (pass --tokenizer=<Qwen3 tokenizer folder>)')
    cfg = Qwen3Config(vocab_size=vocab_rows, rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=QWEN3_IDS['<|im_end|>'],
                      pad_token_id=QWEN3_IDS['<|endoftext|>'], torch_dtype='float32', **sizes)
    model = Qwen3(cfg).init_weights(seed)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(tokenizer_dir, name)):
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    return model


def main():
    sizes = dict(num_hidden_layers=n_layer, hidden_size=n_embd, num_attention_heads=n_head,
                 num_key_value_heads=n_kv_head, head_dim=head_dim, intermediate_size=intermediate)
    model = write_checkpoint(tokenizer, out_dir, vocab_rows, sizes, seed)
    print(f'{out_dir}: random Qwen3 ({model.num_params() / 1e6:.2f}M params, {vocab_rows} vocabulary rows) '
          f'with the tokenizer files of {tokenizer}')


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
