"""
Benchmark (not a test): the CHRPO policy update (chrpo_loss.policy_update, what train_chrpo.py
runs after every rollout batch) on CPU at the embedded default's shape, for the update settings
train_chrpo.py can run, side by side in one process, with ratios against the first one.

    python bench_chrpo.py                                   # fp32_eager,bf16,compile_bf16
    python bench_chrpo.py --variants=fp32_eager,compile,compile_bf16 --rounds=5
    python bench_chrpo.py --threads=1                       # pin torch to one thread (shared machines)

One update = config/tiny_chrpo.py's: 16 questions x 8 rollouts, mu = 2 optimizer steps,
micro-batches of at most 16384 padded tokens, clip 0.2 / 0.28, lr 1e-4. The rollouts are
random tokens with the speedrun's lengths (prompts 30-60 tokens, responses 30-170, drawn
once) and random advantages; the update's cost depends on their shapes, not their values.
Variants: 'fp32_eager' is train_chrpo.py's default on CPU; 'bf16' is autocast_dtype='bfloat16';
'compile' is compile=True (model.compile_blocks(), dynamic shapes). Every variant updates its
own copy of the same initial model with the same rollouts. Timing: one untimed warm-up update
per variant (compiling happens here; its wall time minus the first variant's is reported as
the compile time), then interleaved rounds of --updates updates each; seconds an update are
the median over the rounds.
"""
import argparse
import copy
import random
import statistics
import time

import torch

from chrpo_loss import policy_update
from model import Qwen3, Qwen3Config
from optim import adamw, make_autocast

# -----------------------------------------------------------------------------
# settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0 = leave as is)')
parser.add_argument('--variants', default='fp32_eager,bf16,compile_bf16',
                    help='comma-separated: fp32_eager, bf16, compile, compile_bf16')
parser.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
parser.add_argument('--updates', type=int, default=2, help='updates per variant per timed round')
args = parser.parse_args()

TINY_BASE = dict(vocab_size=851, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                 tie_word_embeddings=True)  # the speedrun's model (out/base/ckpt/config.json)
ROLLOUTS = 16 * 8           # questions_per_step x group_size
PROMPT_LEN, RESPONSE_LEN = (30, 60), (30, 170)  # token ranges: the speedrun's responses average ~100 tokens
UPDATE = dict(mu=2, micro_batch_tokens=16384, grad_clip=1.0, temperature=0.7, eps_low=0.2, eps_high=0.28,
              kl_coef=0.0)  # config/tiny_chrpo.py
LR = 1e-4

# -----------------------------------------------------------------------------
# helpers


def make_rollouts(n, vocab, seed):
    """n rollouts with random prompt/response tokens at the speedrun's lengths, random advantages."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, r = rng.randint(*PROMPT_LEN), rng.randint(*RESPONSE_LEN)
        out.append({'prompt_ids': [rng.randrange(vocab) for _ in range(p)],
                    'tokens': [rng.randrange(vocab) for _ in range(r)],
                    'token_adv': [rng.gauss(0, 1)] * r,
                    'logprobs': [-rng.random() for _ in range(r)]})
    return out


def make_variant(name, base_model):
    """(model, optimizer, autocast) for a variant name."""
    model = copy.deepcopy(base_model)
    if 'compile' in name:
        model.compile_blocks()
    optimizer = adamw(model, LR, 0.0, (0.9, 0.95))
    return model, optimizer, make_autocast('cpu', 'bfloat16' if 'bf16' in name else 'float32')


def run_update(variant, rollouts):
    """One policy update; returns its wall seconds."""
    model, optimizer, autocast = variant
    torch.manual_seed(0)  # the same mini-batch split for every variant
    t0 = time.perf_counter()
    policy_update(model, model, None, optimizer, rollouts, 1, 0, torch.device('cpu'), autocast=autocast, **UPDATE)
    return time.perf_counter() - t0


# -----------------------------------------------------------------------------
# main

if __name__ == '__main__':
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.variants.split(',')
    for name in names:
        if name not in ('fp32_eager', 'bf16', 'compile', 'compile_bf16'):
            raise SystemExit(f'--variants: unknown variant {name!r} (fp32_eager, bf16, compile, compile_bf16)')
    base = Qwen3(Qwen3Config(**TINY_BASE)).init_weights(0)
    rollouts = make_rollouts(ROLLOUTS, TINY_BASE['vocab_size'], seed=0)
    tokens = sum(len(r['prompt_ids']) + len(r['tokens']) for r in rollouts)
    print(f'{ROLLOUTS} rollouts, {tokens} tokens an update, {torch.get_num_threads()} threads')
    variants = {n: make_variant(n, base) for n in names}
    warm = {n: run_update(variants[n], rollouts) for n in names}
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            times[n].append(sum(run_update(variants[n], rollouts) for _ in range(args.updates)) / args.updates)
    first = statistics.median(times[names[0]])
    print(f"{'variant':<14} {'s/update':>9} {'x first':>8} {'compile s':>10}  rounds")
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:<14} {med:9.2f} {first / med:7.2f}x {max(0.0, warm[n] - warm[names[0]]):10.0f}  "
              + ' '.join(f'{t:.2f}' for t in times[n]))
