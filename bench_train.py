"""
Benchmark (not a test): training throughput of the SFT step for the variants train_sft.py
can run, side by side, with ratios against the first one. On CPU: the tiny base model
(config/tiny_base.py's shape: 4 layers, hidden 128, batch 16, sequences of 150-420 tokens).
On CUDA: Qwen3-1.7B's shape with random weights at the paper SFT's micro-batch
(config/qwen3_1p7b_sft.py: 2 x 6144 tokens, activation checkpointing), with the model FLOPs
utilization and the peak memory against memplan.py's estimate.

    python bench_train.py      # before_eager,before_compile,eager,compile,compile_bf16
    python bench_train.py --variants=eager,compile,bf16,compile_bf16 --steps=20
    python bench_train.py --threads=1              # pin torch to one thread (shared machines)
    python bench_train.py --device=cuda            # bf16,compile_bf16 at Qwen3-1.7B shape: tokens/s, MFU, memory

One step = what train_sft.py does: forward with targets (chunked CE), backward, grad clip,
AdamW (optim.adamw; fused on CUDA). Every variant trains its own copy of the same initial
model on the same batches.
Variants: 'compile' is train_sft.py's compile=True (model.compile_blocks(): each transformer
block compiled with dynamic shapes; the chunked CE loss stays eager: its checks would break the
graph); 'bf16' is autocast_dtype='bfloat16' (fp32 master weights, bf16 matmuls). A 'before_'
prefix runs the loss as model.lm_loss did before 2026-11-24: every position through the LM
head (prompt rows too, as zero terms) in 32 MB chunks; without it, only supervised rows go
through the head, in 4 MB chunks. On CPU, batch lengths are drawn like length-grouped batches
(one length per batch, uniform in 150..420), so the compiled variants see varying shapes as in
a real run; --seq_len fixes one length (CUDA's default). The first quarter of each row is a
prompt with no target.
Timing: after the warm-up steps (the compile time is reported separately, as the wall time of
those steps minus the first variant's; on CUDA the first variant's warm-up also pays the Triton
kernels' JIT and cuBLAS set-up, so the figure is a lower bound there), the variants run in
interleaved rounds of --steps steps each; tokens/s is the median over the rounds. On CUDA the
variants run one after another (a 1.7B model's fp32 weights, gradients and AdamW state take
27 GB each) on a dedicated device, each one's peak memory printed against memplan's estimate
(whose 2 GiB runtime row is memory torch's allocator does not count).
Tokens are real tokens (no padding here, so tokens = batch * length).
MFU = model FLOPs per token (model.flops_per_token at the batch's length, as train_sft.py logs
it) x tokens/s / --peak_tflops; printed on CUDA, or on CPU when --peak_tflops is given.
"""
import argparse
import copy
import statistics
import time

import torch

import memplan
from kernels import fused_linear_token_logprobs
from model import Qwen3, Qwen3Config, flash_attn_func
from optim import adamw, make_autocast

# -----------------------------------------------------------------------------
# settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--device', default='cpu', help="'cpu' (tiny base shape) or 'cuda' (Qwen3-1.7B shape)")
parser.add_argument('--variants', default='',
                    help="comma-separated: eager, compile, bf16, compile_bf16, each optionally with a 'before_' prefix "
                         "(default: before_eager,before_compile,eager,compile,compile_bf16 on CPU, bf16,compile_bf16 on CUDA)")
parser.add_argument('--batch', type=int, default=0, help='sequences a step (0 = 16 on CPU, 2 on CUDA)')
parser.add_argument('--seq_len', type=int, default=0,
                    help='tokens a sequence (0 = drawn in 150..420 for each batch on CPU, 6144 on CUDA)')
parser.add_argument('--activation_checkpointing', type=int, default=-1,
                    help='recompute each block in backward: 1 / 0 (-1 = on for CUDA, as the paper SFT config)')
parser.add_argument('--peak_tflops', type=float, default=0.0,
                    help="device peak for MFU (0 = 989 on CUDA: train_sft.py's peak_flops, H100 / H200 bf16 dense; "
                         "none on CPU)")
parser.add_argument('--warmup', type=int, default=0, help='untimed steps per variant first (0 = 8 on CPU, 3 on CUDA)')
parser.add_argument('--steps', type=int, default=0, help='steps per variant per timed round (0 = 10 on CPU, 5 on CUDA)')
parser.add_argument('--rounds', type=int, default=3, help='timed rounds')
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0 = leave as is)')
args = parser.parse_args()

cuda = torch.device(args.device).type == 'cuda'
VOCAB = 851   # the speedrun's trained BPE with the budget tokens (out/base/ckpt/config.json vocab_size)
TINY_BASE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                 tie_word_embeddings=True)  # train_sft.py ties the LM head to the embedding
SHAPE = {} if cuda else TINY_BASE  # Qwen3Config's defaults are Qwen3-1.7B's shape
BATCH = args.batch or (2 if cuda else 16)  # config/qwen3_1p7b_sft.py / config/tiny_base.py batch_size
LENGTHS = (args.seq_len, args.seq_len) if args.seq_len else ((6144, 6144) if cuda else (150, 420))  # corpus: ~150-420
CHECKPOINTING = cuda if args.activation_checkpointing < 0 else bool(args.activation_checkpointing)
PEAK_FLOPS = (args.peak_tflops or (989.0 if cuda else 0.0)) * 1e12
VARIANTS = args.variants or ('bf16,compile_bf16' if cuda else 'before_eager,before_compile,eager,compile,compile_bf16')
WARMUP, STEPS = args.warmup or (3 if cuda else 8), args.steps or (5 if cuda else 10)
BEFORE_CHUNK_ELEMENTS = 2**23  # kernels.FUSED_CHUNK_ELEMENTS['cpu'] before 2026-11-24 (32 MB of fp32 logits)
LR, BETAS, WD, CLIP = 3e-3, (0.9, 0.95), 0.1, 1.0  # train_sft.py / tiny_base.py optimizer settings

# -----------------------------------------------------------------------------
# helpers


def make_batches(n, seed, vocab, batch, lengths, device):
    """n (x, y) batches, one length each in lengths = (lo, hi); targets shifted, the first
    quarter ignored (the prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        ids = torch.randint(0, vocab, (batch, L + 1), generator=g)
        y = ids[:, 1:].clone()
        y[:, :L // 4] = -100
        out.append((ids[:, :-1].to(device), y.to(device)))
    return out


def before_loss(model, x, y):
    """The LM loss as model.lm_loss computed it before 2026-11-24: all B*T rows through the head."""
    h = model(x, return_hidden=True).flatten(0, 1)
    t = y.flatten()
    chunk = BEFORE_CHUNK_ELEMENTS // model.lm_head.weight.shape[0]
    lp = fused_linear_token_logprobs(h, model.lm_head.weight, t, chunk_size=chunk)
    return -lp.sum() / (t != -100).sum().clamp(min=1)


def make_variant(name, base, device, checkpointing):
    """(model, optimizer, autocast context, loss function) for a variant, on a copy of base."""
    kind = name.removeprefix('before_')
    if kind not in ('eager', 'compile', 'bf16', 'compile_bf16'):
        raise ValueError(f'bench_train.py: unknown variant {name!r}')
    model = copy.deepcopy(base).to(device).train()
    model.set_activation_checkpointing(checkpointing)  # before compile, as train_sft.py
    opt = adamw(model, LR, WD, BETAS, fused=device.type == 'cuda')
    if kind.startswith('compile'):
        model.compile_blocks()
    autocast = make_autocast(device, 'bfloat16' if kind.endswith('bf16') else 'float32')
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
    return loss.item()  # a host read: on CUDA the steps have finished when it returns


def batch_flops(model, batches):
    """Model FLOPs of training on `batches` (train_sft.py's count: flops_per_token at each length)."""
    return sum(x.numel() * model.flops_per_token(x.shape[1]) for x, _ in batches)


def measure(group, base, device, batch, lengths, checkpointing, warmup, steps, rounds, peak_flops):
    """`warmup` steps, then `rounds` interleaved timed rounds of `steps` steps of the variants in
    `group`, each on its own copy of base. Returns ({name: warm-up s}, {name: [tokens/s a
    round]}, {name: [MFU a round]}; MFU 0 without a peak)."""
    variants = {name: make_variant(name, base, device, checkpointing) for name in group}
    warm = make_batches(warmup, 1, base.config.vocab_size, batch, lengths, device)
    warm_s, tps, mfu = {}, {name: [] for name in group}, {name: [] for name in group}
    for name, v in variants.items():
        t0 = time.perf_counter()
        loss = train_steps(v, warm)
        warm_s[name] = time.perf_counter() - t0
        print(f'{name:20s} warm-up {warmup} steps: {warm_s[name]:6.1f} s (loss {loss:.3f})', flush=True)
    for r in range(rounds):
        batches = make_batches(steps, 100 + r, base.config.vocab_size, batch, lengths, device)
        n_tokens, flops = sum(x.numel() for x, _ in batches), batch_flops(base, batches)
        for name, v in variants.items():
            t0 = time.perf_counter()
            train_steps(v, batches)
            dt = time.perf_counter() - t0
            tps[name].append(n_tokens / dt)
            mfu[name].append(flops / dt / peak_flops if peak_flops else 0.0)
    return warm_s, tps, mfu


def planned_bytes(cfg, name, batch, max_len, checkpointing):
    """memplan's estimate of train_sft.py's peak for this variant's step."""
    plan = memplan.sft_plan(cfg, batch, max_len, 'bfloat16' if name.endswith('bf16') else 'float32', False, 1,
                            checkpointing)
    return sum(row['bytes'] for rows in plan.values() for row in rows)


# -----------------------------------------------------------------------------
# main

if args.threads > 0:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
cfg = Qwen3Config(**SHAPE, torch_dtype='float32', bos_token_id=None, eos_token_id=None, pad_token_id=0)
base = Qwen3(cfg).init_weights(0)  # fp32 master weights; each variant copies them to the device
names = VARIANTS.split(',')
print(f'{args.device}, {torch.get_num_threads()} threads, model {base.num_params() / 1e6:.2f}M params, batch {BATCH}, '
      f'lengths {LENGTHS[0]}-{LENGTHS[1]}, activation checkpointing {CHECKPOINTING}, torch {torch.__version__}'
      + (f', attention {"flash-attn" if flash_attn_func is not None else "SDPA (no flash-attn)"}' if cuda else ''))
groups = [[name] for name in names] if cuda else [names]  # CPU: interleaved, against load changes
warm_s, tps, mfu = {}, {}, {}
for group in groups:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    group_warm_s, group_tps, group_mfu = measure(group, base, device, BATCH, LENGTHS, CHECKPOINTING, WARMUP, STEPS,
                                                 args.rounds, PEAK_FLOPS)  # its models are freed when it returns
    warm_s.update(group_warm_s), tps.update(group_tps), mfu.update(group_mfu)
    if cuda:  # one variant per group: the peak is its own
        planned = planned_bytes(cfg, group[0], BATCH, LENGTHS[1], CHECKPOINTING)
        print(f'{group[0]:20s} peak memory {torch.cuda.max_memory_allocated() / memplan.GiB:.1f} GiB allocated, '
              f'{torch.cuda.max_memory_reserved() / memplan.GiB:.1f} reserved; memplan {planned / memplan.GiB:.1f} GiB, '
              f'{(planned - memplan.RUNTIME_BYTES) / memplan.GiB:.1f} without its runtime row', flush=True)
        torch.cuda.empty_cache()
med = {name: statistics.median(v) for name, v in tps.items()}
ref = names[0]
for name in names:
    extra = warm_s[name] - warm_s[ref]
    compile_note = f', compile ~{extra:.0f} s (warm-up minus {ref})' if 'compile' in name else ''
    mfu_note = f', MFU {statistics.median(mfu[name]):.1%}' if PEAK_FLOPS else ''
    print(f'{name:20s} {med[name]:8,.0f} tokens/s (rounds: {", ".join(f"{t:,.0f}" for t in tps[name])}) '
          f'x{med[name] / med[ref]:.2f} vs {ref}{mfu_note}{compile_note}')
