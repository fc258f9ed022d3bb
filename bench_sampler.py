"""
Benchmark (not a test): greedy decoding throughput of sampler.generate against
transformers' Qwen3ForCausalLM.generate (same weights, same prompts) and against
cache-free decoding (a full forward over the whole sequence for every new token),
side by side in one process, with the ratios.

    python bench_sampler.py                       # CPU: tiny config (4 layers, hidden 128), batch 1 and 32
    python bench_sampler.py --threads=1           # pin torch to one thread (shared / oversubscribed machines)
    python bench_sampler.py --device=cuda         # Qwen3-1.7B shape, random bf16 weights, CUDA graph decode,
                                                  # batch 1 and 64, 512-token prompts, transformers with a static cache

On CPU 'ours' is generate's default (eager fused decode step) and 'ours+compile' is
generate(compile=True) (the same step through torch.compile); its compile time is printed:
the warm-up call minus the best timed call (--skip_compile leaves it out).
tokens/s = generated tokens (batch * max_new_tokens; no stop tokens, so every row runs to
the cap) / wall time of the whole call, prefill included; the best of --repeats calls after
one warm-up, the methods interleaved so that load changes hit them alike.
On CUDA 'ours' is generate(cuda_graph=True) and 'ours-eager' the same decoding without the
graph (the dynamic loop, model.py's forward): the line gives how many greedy tokens the graph
replay shares with it (bf16: attending over the whole static cache instead of the slots in
use may flip a near-tie, so this is a count, not a check; tests/test_gpu.py checks fp32).
transformers runs with --hf_cache ('static' on CUDA: its fastest generate; 'dynamic' on CPU).
It also prints the batch-1 decode step time, (t(2N) - t(N)) / N tokens, against the time to
read every weight and the cache slots a step attends over once, at the bandwidth of a measured
device-to-device copy: the floor a memory-bound decode step cannot beat.
"""
import argparse
import tempfile
import time

import torch

from model import Qwen3, Qwen3Config, flash_attn_func
from sampler import generate

# -----------------------------------------------------------------------------
# settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--device', default='cpu', help="'cpu' (tiny config) or 'cuda' (Qwen3-1.7B shape)")
parser.add_argument('--batch_sizes', default='', help='comma-separated batch sizes (default: 1,32 on CPU, 1,64 on CUDA)')
parser.add_argument('--max_new_tokens', type=int, default=128, help='tokens generated per row')
parser.add_argument('--prompt_len', type=int, default=0,
                    help='tokens per prompt, all equal: no padding for HF (default: 32 on CPU, 512 on CUDA)')
parser.add_argument('--hf_cache', default='', help="transformers' cache_implementation: 'dynamic' (default on CPU) "
                                                   "or 'static' (default on CUDA)")
parser.add_argument('--repeats', type=int, default=3, help='timed calls per method (best is kept)')
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads on CPU (0 = leave as is)')
parser.add_argument('--skip_cache_free', action='store_true', help='skip the (slow) cache-free baseline')
parser.add_argument('--skip_compile', action='store_true', help="CPU: skip generate(compile=True) ('ours+compile')")
args = parser.parse_args()

# tiny default of the brief (~1.3M params, vocab of the embedded tokenizer) and Qwen3-1.7B's shape
TINY = dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
QWEN3_1P7B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960)

# -----------------------------------------------------------------------------
# helpers


def sync():
    if args.device == 'cuda':
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


@torch.inference_mode()
def cache_free_greedy(model, ids, max_new_tokens):
    """The no-cache baseline: every step re-runs the model over prompt + everything so far."""
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def memory_bandwidth_bytes_per_s():
    x = torch.empty(2**28, dtype=torch.float32, device='cuda')  # 1 GiB
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 4 * 10 / (time.perf_counter() - t0)  # each copy reads and writes 1 GiB


# -----------------------------------------------------------------------------
# main

if args.threads > 0:
    torch.set_num_threads(args.threads)
cuda = torch.device(args.device).type == 'cuda'
batch_sizes = [int(b) for b in (args.batch_sizes or ('1,64' if cuda else '1,32')).split(',')]
prompt_len = args.prompt_len or (512 if cuda else 32)
hf_cache = args.hf_cache or ('static' if cuda else 'dynamic')
dtype = torch.bfloat16 if cuda else torch.float32
shape = QWEN3_1P7B if cuda else TINY
cfg = Qwen3Config(**shape, initializer_range=0.5 if not cuda else 0.02, torch_dtype=str(dtype).replace('torch.', ''),
                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
ours = Qwen3(cfg).init_weights(0).to(device=args.device, dtype=dtype).eval()
print(f'device {args.device}, {torch.get_num_threads()} threads, model {ours.num_params() / 1e6:.2f}M params, '
      f'{dtype}, prompt {prompt_len}, {args.max_new_tokens} new tokens, transformers with a {hf_cache} cache'
      + (f', attention {"flash-attn" if flash_attn_func is not None else "no flash-attn: SDPA, one_query_attention to decode"}'
         if cuda else ''))

import transformers  # noqa: E402  (imported late: only the benchmark needs it)

with tempfile.TemporaryDirectory() as tmp:
    ours.save_pretrained(tmp)
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp, dtype=dtype).to(args.device).eval()

gen = torch.Generator().manual_seed(0)
N = args.max_new_tokens
rows = []
for B in batch_sizes:
    prompts = torch.randint(0, cfg.vocab_size, (B, prompt_len), generator=gen)
    ids = prompts.to(args.device)
    methods = {
        'ours': lambda: generate(ours, prompts.tolist(), max_new_tokens=N, temperature=0, cuda_graph=cuda),
        'transformers': lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N,
                                            min_new_tokens=N, do_sample=False, pad_token_id=0,
                                            cache_implementation=None if hf_cache == 'dynamic' else hf_cache),
    }
    if cuda:
        methods['ours-eager'] = lambda: generate(ours, prompts.tolist(), max_new_tokens=N, temperature=0)
    if not cuda and not args.skip_compile:
        methods['ours+compile'] = lambda: generate(ours, prompts.tolist(), max_new_tokens=N, temperature=0, compile=True)
    if not args.skip_cache_free:
        methods['cache-free'] = lambda: cache_free_greedy(ours, ids, N)
    best, outs, warmup = {}, {}, {}
    for name, fn in methods.items():
        with torch.inference_mode():
            warmup[name], outs[name] = timed(fn)
    for _ in range(args.repeats):
        for name, fn in methods.items():
            with torch.inference_mode():
                dt, _ = timed(fn)
            best[name] = min(best.get(name, float('inf')), dt)
    hf_tokens = outs['transformers'][:, prompt_len:].cpu()
    agree = {name: (torch.tensor([r['tokens'] for r in outs[name]]) == hf_tokens).float().mean().item()
             for name in ('ours', 'ours+compile', 'ours-eager') if name in outs}
    tps = {name: B * N / t for name, t in best.items()}
    line = f'batch {B:3d}: ' + ', '.join(f'{name} {v:,.0f} tok/s' for name, v in tps.items())
    line += ' | ' + ', '.join(f'{name}/transformers {tps[name] / tps["transformers"]:.2f}x' for name in agree)
    if 'cache-free' in tps:
        line += f', ours/cache-free {tps["ours"] / tps["cache-free"]:.2f}x'
    line += ' | greedy tokens equal to transformers: ' + ', '.join(f'{name} {100 * a:.1f}%' for name, a in agree.items())
    if 'ours-eager' in outs:
        same = (torch.tensor([r['tokens'] for r in outs['ours']]) == torch.tensor([r['tokens'] for r in outs['ours-eager']]))
        line += f' | graph tokens equal to ours-eager: {100 * same.float().mean().item():.1f}%'
    if 'ours+compile' in warmup:
        line += f' | compile {warmup["ours+compile"] - best["ours+compile"]:.1f} s'
    print(line)

if cuda:
    # batch-1 decode step time against the read floor: every weight once (the embedding's one row aside,
    # counted anyway: 0.6 GB of a tied 1.7B model's 3.4 GB are the LM head) plus the k/v of the slots
    # attended to. The step time is (t(2N) - t(N)) / N: the steps at positions prompt_len + N .. + 2N,
    # whose mean is prompt_len + 1.5 N. (Without flash-attn the static path's masked attention reads the
    # whole static cache, prompt_len + 2N slots: the floor counts what a step needs, not what it reads.)
    bw = memory_bandwidth_bytes_per_s()
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    mean_slots = prompt_len + 1.5 * N
    kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * mean_slots * dtype.itemsize
    floor_bytes = weight_bytes + kv_bytes
    prompt = [torch.randint(0, cfg.vocab_size, (prompt_len,), generator=gen).tolist()]
    step_times = []
    for _ in range(args.repeats):
        t1, _ = timed(lambda: generate(ours, prompt, max_new_tokens=N, temperature=0, cuda_graph=True))
        t2, _ = timed(lambda: generate(ours, prompt, max_new_tokens=2 * N, temperature=0, cuda_graph=True))
        step_times.append((t2 - t1) / N)
    step = min(step_times)
    print(f'batch-1 decode step {step * 1e3:.2f} ms; weights {weight_bytes / 2**30:.2f} GiB + cache {kv_bytes / 2**20:.0f} '
          f'MiB at measured {bw / 1e9:.0f} GB/s -> read floor {floor_bytes / bw * 1e3:.2f} ms; the step is '
          f'{step / (floor_bytes / bw):.2f}x the floor (goal <= 1.5x)')
