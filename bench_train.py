"""
Benchmark (not a test): CPU training throughput of the tiny base model (config/tiny_base.py's
shape: 4 layers, hidden 128, batch 16, sequences of 150-420 tokens) for the training-step
variants train_sft.py can run, side by side in one process, with ratios against eager fp32.

    python bench_train.py                          # eager fp32 vs torch.compile fp32
    python bench_train.py --variants=eager,compile,bf16,compile_bf16 --steps=20
    python bench_train.py --threads=1              # pin torch to one thread (shared machines)

One step = what train_sft.py does: forward with targets (chunked CE), backward, grad clip,
AdamW. Every variant trains its own copy of the same initial model on the same batches.
Batch lengths are drawn like length-grouped batches (one length per batch, uniform in
150..420), so the compiled variants see varying shapes as in a real run. 'compile' is
train_sft.py's compile=True: model.compile_blocks() (each transformer block compiled with
dynamic shapes; the chunked CE loss stays eager: its checks would break the graph). Timing: after the warm-up steps
(the compile time is reported separately, as the wall time of those steps minus eager's),
the variants run in interleaved rounds of --steps steps each; tokens/s is the median over
the rounds. Tokens are real tokens (no padding here, so tokens = batch * length).
"""
import argparse
import copy
import statistics
import time

import torch

from model import Qwen3, Qwen3Config

# -----------------------------------------------------------------------------
# settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--variants', default='eager,compile', help='comma-separated: eager, compile, bf16, compile_bf16')
parser.add_argument('--warmup', type=int, default=8, help='untimed steps per variant first (compile happens here)')
parser.add_argument('--steps', type=int, default=10, help='steps per variant per timed round')
parser.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0 = leave as is)')
args = parser.parse_args()

VOCAB = 2048  # the embedded tokenizer's vocabulary is about this size
TINY_BASE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048)
BATCH = 16                  # config/tiny_base.py batch_size
LENGTHS = (150, 420)        # corpus examples are ~150-420 tokens
LR, BETAS, WD, CLIP = 3e-3, (0.9, 0.95), 0.1, 1.0  # train_sft.py / tiny_base.py optimizer settings

# -----------------------------------------------------------------------------
# helpers


def make_batches(n, seed):
    """n (x, y) batches, one length each; targets shifted, the first quarter ignored (the prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(LENGTHS[0], LENGTHS[1] + 1, (1,), generator=g))
        ids = torch.randint(0, VOCAB, (BATCH, L + 1), generator=g)
        y = ids[:, 1:].clone()
        y[:, :L // 4] = -100
        out.append((ids[:, :-1], y))
    return out


def make_variant(name, base):
    """(model to call, optimizer, autocast context) for a variant, on a copy of base."""
    model = copy.deepcopy(base).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': WD}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=LR, betas=BETAS)
    if name.startswith('compile'):
        model.compile_blocks()
    run = model
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=name.endswith('bf16'))
    return run, model, opt, autocast


def train_steps(variant, batches):
    run, model, opt, autocast = variant
    for x, y in batches:
        with autocast:
            loss = run(x, targets=y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


# -----------------------------------------------------------------------------
# main

if args.threads > 0:
    torch.set_num_threads(args.threads)
cfg = Qwen3Config(**TINY_BASE, torch_dtype='float32', bos_token_id=None, eos_token_id=None, pad_token_id=0)
base = Qwen3(cfg).init_weights(0)
names = args.variants.split(',')
print(f'{torch.get_num_threads()} threads, model {base.num_params() / 1e6:.2f}M params, batch {BATCH}, '
      f'lengths {LENGTHS[0]}-{LENGTHS[1]}, torch {torch.__version__}')
variants = {name: make_variant(name, base) for name in names}
warm = make_batches(args.warmup, seed=1)
warm_s = {}
for name, v in variants.items():
    t0 = time.perf_counter()
    loss = train_steps(v, warm)
    warm_s[name] = time.perf_counter() - t0
    print(f'{name:14s} warm-up {args.warmup} steps: {warm_s[name]:6.1f} s (loss {loss:.3f})', flush=True)
tps = {name: [] for name in names}
for r in range(args.rounds):
    batches = make_batches(args.steps, seed=100 + r)
    n_tokens = sum(x.numel() for x, _ in batches)
    for name, v in variants.items():
        t0 = time.perf_counter()
        train_steps(v, batches)
        tps[name].append(n_tokens / (time.perf_counter() - t0))
med = {name: statistics.median(v) for name, v in tps.items()}
ref = med.get('eager', next(iter(med.values())))
for name in names:
    extra = warm_s[name] - warm_s.get('eager', 0.0) * (name != 'eager')
    compile_note = f', compile ~{extra:.0f} s (warm-up minus eager)' if name.startswith('compile') else ''
    print(f'{name:14s} {med[name]:8,.0f} tokens/s (rounds: {", ".join(f"{t:,.0f}" for t in tps[name])}) '
          f'x{med[name] / ref:.2f} vs eager{compile_note}')
