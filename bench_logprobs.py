"""
Benchmark (not a test): peak memory and time of per-token log-probs, forward + backward,
for three ways of getting log p(target) out of hidden states and an LM head:

    naive   : logits = hidden @ weight.T; log_softmax(logits.float() / T).gather()  (the usual way)
    chunked : logits = hidden @ weight.T; kernels.token_logprobs(logits, ...)      (full logits, no fp32 log-softmax)
    fused   : kernels.fused_linear_token_logprobs(hidden, weight, ...)             (never holds [N, V])

each followed by backward of sum(logprob * g) with a random per-token g (RL advantages).

    python bench_logprobs.py                                   # CPU default: N=2048 V=32768 H=512 fp32
    python bench_logprobs.py --device=cuda --N=8192 --V=151936 --H=2048 --dtype=bfloat16

How memory is measured (peak *extra* bytes of one forward+backward, inputs excluded):
- CUDA: in this process, torch.cuda.max_memory_allocated() after reset_peak_memory_stats(),
  minus the bytes allocated before the call.
- CPU: torch has no CPU allocator statistics and tracemalloc does not see torch, so each
  variant runs once in a fresh subprocess of this script (--measure=VARIANT) that reads the
  process's resident high-water mark (VmHWM in /proc/self/status; ru_maxrss on macOS) before
  and after the call; the delta is the
  operation's peak resident memory. Fresh processes keep one variant's high-water mark from
  hiding another's. It includes a little one-time library state (thread pools, oneDNN), so
  it slightly overstates small numbers. The printed "[N, V] fp32" size is the unit to compare to.
Time is the median of --repeats calls after one warm-up, in this process.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import kernels

MiB = 2**20  # bytes per MiB, for printing

# -----------------------------------------------------------------------------
# the three variants


def make_inputs(args):
    gen = torch.Generator(device=args.device).manual_seed(0)
    dtype = getattr(torch, args.dtype)
    hidden = torch.randn(args.N, args.H, generator=gen, device=args.device).to(dtype).requires_grad_()
    weight = (torch.randn(args.V, args.H, generator=gen, device=args.device) / args.H**0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, args.V, (args.N,), generator=gen, device=args.device)
    upstream = torch.randn(args.N, generator=gen, device=args.device)
    return hidden, weight, targets, upstream


def run_variant(name, hidden, weight, targets, upstream, args):
    """One forward + backward; leaves grads in hidden.grad / weight.grad."""
    hidden.grad, weight.grad = None, None
    if name == "naive":
        logits = hidden @ weight.T
        logprob = torch.log_softmax(logits.float() / args.temperature, dim=-1).gather(1, targets[:, None]).squeeze(1)
    elif name == "chunked":
        logits = hidden @ weight.T
        logprob = kernels.token_logprobs(logits, targets, args.temperature, backend=args.backend)
    elif name == "fused":
        logprob = kernels.fused_linear_token_logprobs(hidden, weight, targets, args.temperature,
                                                      backend=args.backend, chunk_size=args.chunk_size)
    else:
        raise ValueError(f"bench_logprobs: unknown variant {name!r}")
    (logprob * upstream).sum().backward()
    return logprob.detach()


VARIANTS = ["naive", "chunked", "fused"]

# -----------------------------------------------------------------------------
# measurement


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_bytes_cuda(name, inputs, args):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run_variant(name, *inputs, args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def maxrss_bytes():
    # Linux: VmHWM of this address space. Not ru_maxrss: Linux carries the parent's high-water
    # mark across fork + exec into ru_maxrss, which would hide the child's own peak.
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, fresh per process


def measure_in_this_process(name, args):
    """Child mode (CPU): high-water RSS delta of one call, printed as JSON."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    inputs = make_inputs(args)
    # grads and outputs that every variant needs exist after the call too; the baseline
    # holds only the inputs (already touched by randn)
    before = maxrss_bytes()
    run_variant(name, *inputs, args)
    after = maxrss_bytes()
    print(json.dumps({"variant": name, "peak_bytes": after - before}))


def peak_bytes_cpu_subprocess(name, argv):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, f"--measure={name}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def median_seconds(name, inputs, args):
    run_variant(name, *inputs, args)  # warm-up (Triton compile, allocator)
    times = []
    for _ in range(args.repeats):
        sync(args.device)
        t0 = time.perf_counter()
        run_variant(name, *inputs, args)
        sync(args.device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]

# -----------------------------------------------------------------------------
# main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--N", type=int, default=2048, help="tokens")
    p.add_argument("--V", type=int, default=32768, help="vocab size")
    p.add_argument("--H", type=int, default=512, help="hidden size")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    p.add_argument("--chunk_size", type=int, default=None, help="fused: tokens per chunk (default: kernels' choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (median reported)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: CPU child mode
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.measure:
        measure_in_this_process(args.measure, args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_logprobs: --device=cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"bench_logprobs: unknown variant {v!r} in --variants (choose from {VARIANTS})")
    chunk = args.chunk_size or kernels.default_chunk_size(args.V, args.device)
    nv_fp32 = args.N * args.V * 4
    print(f"N={args.N} V={args.V} H={args.H} dtype={args.dtype} device={args.device} T={args.temperature} "
          f"backend={args.backend} fused chunk={chunk} tokens threads={torch.get_num_threads()}")
    print(f"one [N, V] fp32 tensor = {nv_fp32 / MiB:.0f} MiB; weight = {args.V * args.H * torch.finfo(getattr(torch, args.dtype)).bits // 8 / MiB:.0f} MiB")

    inputs = make_inputs(args)
    # sanity: the variants agree
    ref = run_variant("naive", *inputs, args).double()
    for v in variants:
        diff = (run_variant(v, *inputs, args).double() - ref).abs().max().item()
        print(f"  max |logprob - naive| for {v}: {diff:.2e}")

    results = {}
    for v in variants:
        if args.device == "cuda":
            peak = peak_bytes_cuda(v, inputs, args)
        else:
            peak = peak_bytes_cpu_subprocess(v, [a for a in argv if not a.startswith("--measure")])
        results[v] = (peak, median_seconds(v, inputs, args))

    base_peak, base_time = results.get("naive", next(iter(results.values())))
    print(f"\n{'variant':<8} {'peak extra MiB':>15} {'x naive':>8} {'time s':>9} {'x naive':>8}")
    for v, (peak, secs) in results.items():
        print(f"{v:<8} {peak / MiB:>15.1f} {peak / max(base_peak, 1):>8.3f} {secs:>9.3f} {secs / base_time:>8.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
