"""
Benchmark (not a test): CPU training throughput of the tiny base model (config/tiny_base.py's
shape: 4 layers, hidden 128, batch 16, sequences of 150-420 tokens) for the training-step
variants train_sft.py can run, side by side in one process, with ratios against the first one.

    python bench_train.py      # before_eager,before_compile,eager,compile,compile_bf16
    python bench_train.py --variants=eager,compile,bf16,compile_bf16 --steps=20
    python bench_train.py --threads=1              # pin torch to one thread (shared machines)

One step = what train_sft.py does: forward with targets (chunked CE), backward, grad clip,
AdamW. Every variant trains its own copy of the same initial model on the same batches.
Variants: 'compile' is train_sft.py's compile=True (model.compile_blocks(): each transformer
block compiled with dynamic shapes; the chunked CE loss stays eager: its checks would break the
graph); 'bf16' is autocast_dtype='bfloat16' (fp32 master weights, bf16 matmuls). A 'before_'
prefix runs the loss as model.lm_loss did before 2026-11-24: every position through the LM
head (prompt rows too, as zero terms) in 32 MB chunks; without it, only supervised rows go
through the head, in 4 MB chunks. Batch lengths are drawn like length-grouped batches (one
length per batch, uniform in 150..420, the first quarter of each row a prompt with no target),
so the compiled variants see varying shapes as in a real run. Timing: after the warm-up steps
(the compile time is reported separately, as the wall time of those steps minus the first
variant's), the variants run in interleaved rounds of --steps steps each; tokens/s is the
median over the rounds. Tokens are real tokens (no padding here, so tokens = batch * length).
"""
import argparse
import copy
import statistics
import time

import torch

from kernels import fused_linear_token_logprobs
from model import Qwen3, Qwen3Config

# -----------------------------------------------------------------------------
# settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--variants', default='before_eager,before_compile,eager,compile,compile_bf16',
                    help="comma-separated: eager, compile, bf16, compile_bf16, each optionally with a 'before_' prefix")
parser.add_argument('--warmup', type=int, default=8, help='untimed steps per variant first (compile happens here)')
parser.add_argument('--steps', type=int, default=10, help='steps per variant per timed round')
parser.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0 = leave as is)')
args = parser.parse_args()

VOCAB = 851   # the speedrun's trained BPE with the budget tokens (out/base/ckpt/config.json vocab_size)
TINY_BASE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                 tie_word_embeddings=True)  # train_sft.py ties the LM head to the embedding
BATCH = 16                  # config/tiny_base.py batch_size
BEFORE_CHUNK_ELEMENTS = 2**23  # kernels.FUSED_CHUNK_ELEMENTS['cpu'] before 2026-11-24 (32 MB of fp32 logits)
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


def before_loss(model, x, y):
    """The LM loss as model.lm_loss computed it before 2026-11-24: all B*T rows through the head."""
    h = model(x, return_hidden=True).flatten(0, 1)
    t = y.flatten()
    chunk = BEFORE_CHUNK_ELEMENTS // model.lm_head.weight.shape[0]
    lp = fused_linear_token_logprobs(h, model.lm_head.weight, t, chunk_size=chunk)
    return -lp.sum() / (t != -100).sum().clamp(min=1)


def make_variant(name, base):
    """(model, optimizer, autocast context, loss function) for a variant, on a copy of base."""
    model = copy.deepcopy(base).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': WD}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=LR, betas=BETAS)
    kind = name.removeprefix('before_')
    if kind not in ('eager', 'compile', 'bf16', 'compile_bf16'):
        raise ValueError(f'bench_train.py: unknown variant {name!r}')
    if kind.startswith('compile'):
        model.compile_blocks()
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=kind.endswith('bf16'))
    loss_fn = before_loss if name.startswith('before_') else (lambda m, x, y: m(x, targets=y))
    return model, opt, autocast, loss_fn


def train_steps(variant, batches):
    model, opt, autocast, loss_fn = variant
    for x, y in batches:
        with autocast:
            loss = loss_fn(model, x, y)
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
    print(f'{name:20s} warm-up {args.warmup} steps: {warm_s[name]:6.1f} s (loss {loss:.3f})', flush=True)
tps = {name: [] for name in names}
for r in range(args.rounds):
    batches = make_batches(args.steps, seed=100 + r)
    n_tokens = sum(x.numel() for x, _ in batches)
    for name, v in variants.items():
        t0 = time.perf_counter()
        train_steps(v, batches)
        tps[name].append(n_tokens / (time.perf_counter() - t0))
med = {name: statistics.median(v) for name, v in tps.items()}
ref = names[0]
for name in names:
    extra = warm_s[name] - warm_s[ref]
    compile_note = f', compile ~{extra:.0f} s (warm-up minus {ref})' if 'compile' in name else ''
    print(f'{name:20s} {med[name]:8,.0f} tokens/s (rounds: {", ".join(f"{t:,.0f}" for t in tps[name])}) '
          f'x{med[name] / med[ref]:.2f} vs {ref}{compile_note}')
