"""
Batched KV-cache sampler: the one place where every stage turns a model into text
(evaluation, the compressor's source CoTs, teacher budgets, CHRPO rollouts).

    from sampler import generate
    results = generate(model, [[1, 2, 3], [4, 5]], n=4, max_new_tokens=256,
                       temperature=0.7, top_p=0.9, stop_token_ids=(im_end_id,), seed=0)
    # results[i] = {'prompt_index', 'tokens', 'logprobs', 'finish_reason'}, one per
    # (prompt, sample), in prompt order: prompt 0's n samples, then prompt 1's, ...

How it works (one batch of rows = (prompt, sample) pairs, at most `batch_size` of them):
1. Prefill. The distinct prompts of the batch are right-padded into one [P, L] forward
   with input_pos = 0 that writes their keys/values into rows 0..P-1 of the batch's one
   preallocated cache (one row per decoded sequence, prompt + max_new_tokens slots). Each
   prompt's next-token logits are read at its last real token (index len - 1). Padding
   junk lands in slots >= len, which a query at position p < slot never sees and which
   decoding overwrites before they become visible (model.py's cache contract).
2. Fan out. Each prompt's prefilled slots are copied in place to its n sample rows (the
   prefill runs once per prompt, not once per sample; nothing is copied at n = 1) and each
   sample draws its own first token from the prefill logits, so the n samples diverge from
   the first token on.
3. Decode, one token per step for all live rows at once. A row is done at its first stop
   token (kept in the output, finish 'stop') or after max_new_tokens ('length').
   CPU / eager path: finished rows are dropped from the live tensors and caches once they
   are COMPACT_FRACTION of the batch, so they stop costing work; each step attends only
   over the cache slots in use so far. On CPU the step is fused_decode_step, the model's
   T=1 forward with fused weights and fewer ops (a small model's CPU step costs its op
   count more than its FLOPs), eager or, with compile=True, through torch.compile; on
   CUDA it is model.py's forward. Static path (CUDA with cuda_graph=True or compile=True,
   or static_shapes=True on any device): shapes never change, the decode step is model.py's
   forward over the whole cache, captured once as a CUDA graph and replayed on CUDA;
   finished rows stay in the batch, masked (their input frozen, their outputs ignored).
   On CPU it is slower than the default (finished rows keep costing work); it is there so
   that the GPU path's logic runs, and is tested, without a GPU.

Sampling, per row, from the logits x of the step:
    temperature == 0:  token = argmax x,  logprob = log_softmax(x)[token]   (greedy)
    otherwise:         z = x / T, top-k then top-p filtering (removed entries -> -inf),
                       token ~ softmax(z),  logprob = log_softmax(z)[token]
The log-prob is the one of the distribution actually sampled from: the behaviour
log-prob the RL loss needs. The draw inverts the cumulative distribution with one uniform
number per row:
    cdf_i = sum_{j <= i} exp(z_j - max z),  u ~ U(0, cdf_V],  token = min {i : cdf_i >= u}
which picks i with probability softmax(z)_i (cdf in float64, so tiny probabilities keep their
share), all from one torch.Generator: same seed (and same arguments) -> same outputs. (It
replaced an exponential race, argmax(z - log E) with E ~ Exp(1): V random numbers a row, whose
generation made a draw at batch 32 cost ~40% of the CPU model step; now 8x less.)

What has been measured (BENCHMARKS.md): the CPU path only, fused_decode_step eager and
compiled; its greedy tokens equal transformers' at every position and tests/test_sampler.py
runs on CPU, the static-shape loop included (static_shapes=True, eager and compiled).
The CUDA-only parts (model.py's forward on CUDA, the CUDA graph capture and replay, bf16
weights) have not run on a GPU yet: none was available to this project so far, so their
correctness and speed are unchecked (`bash bench_gpu.sh` runs every GPU check at once).

Run the tests with `python -m pytest tests/test_sampler.py` and the speed comparison
against transformers with `python bench_sampler.py` (`--device=cuda` on a GPU).
"""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

# -----------------------------------------------------------------------------
# constants

COMPACT_FRACTION = 0.25  # eager path: drop finished rows once they are >= this share of the live batch
GRAPH_SYNC_EVERY = 16  # CUDA: the host reads the device's "done" flags every this many steps (a sync)

# -----------------------------------------------------------------------------
# logits -> tokens


def sorted_descending(x):
    """The values of x [..., V] sorted in descending order along the last dim (no indices).
    On CPU numpy's vectorized sort is ~5x faster than torch.sort, which also sorts the indices:
    at batch 32 and V = 2048 it was 0.7 against 3.3 ms a step (BENCHMARKS.md)."""
    if x.device.type == 'cpu':
        return torch.from_numpy(np.ascontiguousarray(np.sort(x.detach().numpy(), axis=-1)[..., ::-1]))
    return torch.sort(x, dim=-1, descending=True).values


def filter_logits(logits, top_k=0, top_p=1.0):
    """Top-k then top-p (nucleus) filtering of logits [..., V]: removed entries become -inf.
    top_k: keep the k largest (ties at the k-th value are all kept); 0 = off.
    top_p: keep the smallest prefix of the sorted distribution (renormalized after top-k)
    whose mass reaches top_p, i.e. drop token j when the mass strictly before it (sorted
    descending) is already >= top_p; the most likely token is always kept. 1.0 = off.
    The prefix is found on the sorted probabilities alone: its length m, then its smallest
    value tau = p_(m), then every token with p >= tau is kept (ties with tau all kept)."""
    if top_k < 0:
        raise ValueError(f'top_k must be >= 0 (0 = off), got {top_k}')
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f'top_p must be in (0, 1], got {top_p}')
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    if top_p < 1.0:
        probs = torch.softmax(logits.float(), dim=-1)
        ranked = sorted_descending(probs)
        mass_before = torch.cumsum(ranked, dim=-1) - ranked  # exclusive cumulative sum, non-decreasing
        n_kept = (mass_before < top_p).sum(dim=-1, keepdim=True)  # >= 1: mass_before[0] = 0
        tau = ranked.gather(-1, n_kept - 1)
        logits = logits.masked_fill(probs < tau, float('-inf'))
    return logits


def sample_from_logits(logits, temperature=1.0, top_p=1.0, top_k=0, generator=None):
    """logits [B, V] -> (tokens [B] long, logprobs [B] float32), see the module docstring.
    Greedy at temperature 0 (log-prob under the raw logits)."""
    if temperature < 0:
        raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature}')
    x = logits.float()
    if temperature == 0:
        top, tokens = x.max(dim=-1, keepdim=True)  # the first maximum, as argmax
        total = torch.exp(x - top).sum(dim=-1)
    else:
        if temperature != 1.0:
            x = x / temperature
        x = filter_logits(x, top_k, top_p)
        top = x.amax(dim=-1, keepdim=True)
        # inverse CDF: cdf_i = sum_{j <= i} exp(z_j - max z), u uniform in (0, cdf_V], token = the
        # first i with cdf_i >= u, drawn with probability exp(z_i - max z) / cdf_V = softmax(z)_i.
        # float64, so that a token of probability 1e-12 keeps its own increment of the cdf.
        cdf = torch.exp(x - top).double().cumsum_(dim=-1)
        total = cdf[:, -1]
        u = (1 - torch.rand(x.shape[0], 1, dtype=torch.float64, device=x.device, generator=generator)) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u)  # u > 0 skips leading zero-probability tokens, u <= cdf_V stays in range
    # logprob = z[token] - logsumexp(z) = (z[token] - max z) - log(sum exp(z - max z))
    logprobs = (x.gather(-1, tokens) - top).squeeze(-1) - total.log().float()
    return tokens.squeeze(-1), logprobs


# -----------------------------------------------------------------------------
# helpers


def _check_args(model, prompts, n, max_new_tokens, temperature, top_p, top_k, stop_token_ids):
    V = model.config.vocab_size
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise ValueError('prompts must be a non-empty list of token-id lists')
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f'prompts[{i}] is empty: every prompt needs at least one token')
        lo, hi = min(p), max(p)
        if lo < 0 or hi >= V:
            raise ValueError(f'prompts[{i}] has token id {lo if lo < 0 else hi} outside the vocabulary [0, {V})')
    if n < 1:
        raise ValueError(f'n (samples per prompt) must be >= 1, got {n}')
    if max_new_tokens < 0:
        raise ValueError(f'max_new_tokens must be >= 0, got {max_new_tokens}')
    if temperature < 0:
        raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature}')
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f'top_p must be in (0, 1], got {top_p}')
    if top_k < 0:
        raise ValueError(f'top_k must be >= 0 (0 = off), got {top_k}')
    for s in stop_token_ids:
        if not 0 <= s < V:
            raise ValueError(f'stop token id {s} is outside the vocabulary [0, {V})')
    longest = max(len(p) for p in prompts) + max_new_tokens - 1
    if longest >= model.config.max_position_embeddings:
        raise ValueError(f'longest prompt + max_new_tokens reaches position {longest} >= '
                         f'max_position_embeddings {model.config.max_position_embeddings}')


def host_sync_every(device):
    """Decode steps between the host's reads of the done flags (compaction, the early end): every
    step on CPU, where reading is free; GRAPH_SYNC_EVERY on CUDA, where each read (int(), bool())
    waits for the GPU to drain its queue."""
    return GRAPH_SYNC_EVERY if device.type == 'cuda' else 1


def _finish(tokens, logprobs, stop_at, row_ids, n, max_new_tokens):
    """(row id, result dict) per row from its (CPU) output buffers; stop_at = step of its first
    stop token, or max_new_tokens when it never stopped. Row id = prompt_index * n + sample."""
    out = []
    for b in range(tokens.shape[0]):
        s = int(stop_at[b])
        stopped = s < max_new_tokens
        length = s + 1 if stopped else max_new_tokens
        out.append((int(row_ids[b]), {'prompt_index': int(row_ids[b]) // n, 'tokens': tokens[b, :length].tolist(),
                    'logprobs': logprobs[b, :length].tolist(),
                    'finish_reason': 'stop' if stopped else 'length'}))
    return out


def _prefill(model, prompts, rows, max_len):
    """One right-padded forward over the P distinct prompts, writing their keys/values into rows
    0..P-1 of a cache of `rows` >= P rows and max_len slots (the decode batch's only cache:
    the fan-out fills the other rows in place). Returns (cache, next-token logits [P, V] at
    each prompt's last real token, lens [P])."""
    device = model.model.embed_tokens.weight.device
    P, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(P, L, dtype=torch.long)  # pad id 0: any valid id, never seen by real queries
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.as_tensor(p, dtype=torch.long)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    cache = model.make_kv_cache(rows, max_len)
    h = model.hidden(ids.to(device), kv_cache=[(k[:P, :, :L], v[:P, :, :L]) for k, v in cache],
                     input_pos=torch.zeros(P, dtype=torch.long, device=device))
    last = h[torch.arange(P, device=device), lens - 1]  # [P, H]: only these rows go through the head
    return cache, model.lm_head(last), lens


def _fan_out(cache, src, prompt_len):
    """In place: decode row i gets the prefilled prompt row src[i] < P (prompt slots only); each
    layer's gather reads the P source rows before the write. No-op when src is arange (one
    sample per prompt, prompts in row order): the prefill already wrote every row where
    decoding reads it. The temporary is one layer's [rows, kv_heads, prompt_len, head_dim]:
    the cache itself is never duplicated (memplan.sampling_rows counts no fan-out copy)."""
    if torch.equal(src, torch.arange(len(src))):
        return
    src = src.to(cache[0][0].device)
    for k, v in cache:
        k[:, :, :prompt_len] = k[src, :, :prompt_len]
        v[:, :, :prompt_len] = v[src, :, :prompt_len]


# -----------------------------------------------------------------------------
# the fused CPU decode step
#
# model(tokens[:, None], kv_cache, input_pos=pos)[:, -1] for one new token per row (T=1),
# rewritten for CPU decoding, where a small model's step costs its number of ops more than
# its FLOPs. Same math as model.py's forward (tests/test_sampler.py checks it against the
# reference and transformers), with the weights rearranged once per generate() call:
# - q, k, v in one matmul, gate and up in another;
# - RMSNorm as x / sqrt(|x|^2 + n eps) (3 cheap ops), its weight and its sqrt(n) folded into
#   the columns of the matmul that follows (rms(x) * w @ W^T = unit(x) @ (W * w sqrt(n))^T),
#   the final norm's into a copy of the LM head, the QK-norm weights and 1/sqrt(head_dim)
#   into per-row RoPE factors built once a step for all layers:
#       rope(w * n) = n * (w * cos) + roll(n) * (sign * roll(w) * sin),
#   roll = the two halves of head_dim swapped, sign = (-1 on the first half, +1 on the second),
#   since rotate_half(x) = (-x2, x1) = sign * roll(x);
# - the new keys/values go into the cache with one index_put_ each, and attention at T=1 runs
#   over the cache slots in use, masked past each row's position by an additive bias.
# ~20 ops a layer. Eager, the attention is two batched matmuls (attend_bmm); under
# generate(compile=True) the step goes through torch.compile (inductor's C++ code) with the
# attention as broadcast products and sums (attend_elementwise), which inductor fuses into
# one loop nest: one graph for every batch size >= 2, cache length and attended length
# (dimensions marked dynamic), a second one for batch size 1 (dynamo specializes size 1).
# Kept: eager as the default (no compile cost: 2.4x transformers' generate at batch 1, 1.4x at
# batch 32 on the 2-core EPYC, 1 thread), compile=True as the caller's choice (3.7x and 1.8x,
# after ~50-65 s of compiling a graph on a cold inductor cache, ~10 s in a later process).
# Batch 32 is bounded by the matmuls, which transformers runs too: they alone take ~1.2 ms of
# its ~5.7 ms step. Numbers and what was tried: BENCHMARKS.md, "CPU decode step and sampling,
# round 2 (2026-11-23, EPYC)".


def fuse_decode_weights(model):
    """model -> dict of the rearranged weights fused_decode_step reads (one extra copy of
    the matrices: fine on CPU for small models; the CUDA path keeps model.py's forward)."""
    cfg = model.config
    if cfg.attention_bias:
        raise ValueError('fused_decode_step: attention_bias=True is not supported (use model.py\'s forward)')
    nh, nkv, hd, H = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
    half, dtype = hd // 2, model.model.embed_tokens.weight.dtype
    sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(dtype)
    layers, qk_norm, qk_norm_rot = [], [], []
    for blk in model.model.layers:
        a, m = blk.self_attn, blk.mlp
        w_qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        w_gu = torch.cat([m.gate_proj.weight, m.up_proj.weight])
        layers.append((w_qkv * (blk.input_layernorm.weight * math.sqrt(H)), a.o_proj.weight.t(),
                       w_gu * (blk.post_attention_layernorm.weight * math.sqrt(H)), m.down_proj.weight.t()))
        w = torch.cat([(a.q_norm.weight / math.sqrt(hd)).expand(nh, hd), a.k_norm.weight.expand(nkv, hd)]) * math.sqrt(hd)
        qk_norm.append(w)
        qk_norm_rot.append(sign * w.roll(half, dims=-1))
    return {'layers': layers, 'qk_norm': torch.stack(qk_norm), 'qk_norm_rot': torch.stack(qk_norm_rot),  # [L, heads, hd]
            'embed': model.model.embed_tokens.weight, 'head': model.lm_head.weight * (model.model.norm.weight * math.sqrt(H)),
            'inv_freq': 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)),
            'eps_hidden': torch.tensor(math.sqrt(H * cfg.rms_norm_eps), dtype=dtype),  # sqrt(n eps) of unit_rms
            'eps_head': torch.tensor(math.sqrt(hd * cfg.rms_norm_eps), dtype=dtype)}


def unit_rms(x, sqrt_n_eps):
    """x / sqrt(|x|^2 + n eps) over the last dim (size n) = RMSNorm(x) / sqrt(n), unweighted."""
    return x / torch.hypot(torch.linalg.vector_norm(x, dim=-1, keepdim=True), sqrt_n_eps)


def attention_bias(pos, used, dtype=torch.float32):
    """[B, 1, 1, used] additive mask: the query at position pos[b] sees slots 0..pos[b] of its row
    (in the weights' dtype: baddbmm wants bias and operands alike, e.g. CHRPO's bf16 sampling copy)."""
    bias = torch.zeros(pos.shape[0], 1, 1, used, device=pos.device, dtype=dtype)
    return bias.masked_fill_(torch.arange(used, device=pos.device) > pos[:, None, None, None], float('-inf'))


def attend_bmm(q, k, v, bias):
    """softmax(q k^T + bias) v at T=1 as two batched matmuls over (row, k/v head). q [B, n_kv, g, hd]
    (the g query heads of each k/v head, 1/sqrt(hd) folded in), k, v [B, n_kv, used, hd]."""
    B, n_kv, g, hd = q.shape
    used = k.shape[2]
    scores = torch.baddbmm(bias.expand(B, n_kv, 1, used).reshape(B * n_kv, 1, used), q.reshape(B * n_kv, g, hd),
                           k.reshape(B * n_kv, used, hd).transpose(1, 2))
    return torch.bmm(torch.softmax(scores, dim=-1), v.reshape(B * n_kv, used, hd)).view(B, n_kv, g, hd)


def attend_elementwise(q, k, v, bias):
    """attend_bmm as broadcast products and sums, for inductor: it fuses them into loops over the
    cache without the [.., used, hd] temporaries (eager, those make it slower than MKL's bmm)."""
    scores = (q[:, :, :, None] * k[:, :, None]).sum(dim=-1) + bias  # [B, n_kv, g, used]
    return (torch.softmax(scores, dim=-1)[..., None] * v[:, :, None]).sum(dim=-2)


def fused_decode_step(w, tokens, cache, pos, bias, attend=attend_bmm):
    """tokens [B], cache: list of (k, v) [B, n_kv, S, hd] per layer, pos [B] (the slot this token
    goes to), bias = attention_bias(pos, used) for the `used` slots attended to (> pos.max()),
    w = fuse_decode_weights(model). Writes the new keys/values, returns logits [B, V]."""
    B, (n_kv, S, hd) = tokens.shape[0], cache[0][0].shape[1:]
    heads = w['qk_norm'].shape[1]  # query + key heads
    nh, used = heads - n_kv, bias.shape[-1]
    x = F.embedding(tokens, w['embed'])
    angles = pos[:, None].float() * w['inv_freq']  # fp32 angles, as model.rope_cos_sin
    angles = torch.cat((angles, angles), dim=-1)[:, None, None]  # [B, 1, 1, hd]
    cos_w = angles.cos().to(x.dtype) * w['qk_norm']  # [B, L, heads, hd]
    sin_w = angles.sin().to(x.dtype) * w['qk_norm_rot']
    rows = torch.arange(B, device=x.device)[:, None].expand(B, n_kv)
    slots = torch.arange(n_kv, device=x.device)[None] * S + pos[:, None]  # into k.view(B, n_kv * S, hd)
    for i, (w_qkv, w_o_t, w_gu, w_down_t) in enumerate(w['layers']):
        k_cache, v_cache = cache[i]
        qkv = F.linear(unit_rms(x, w['eps_hidden']), w_qkv)
        n = unit_rms(qkv[:, :heads * hd].view(B, heads, hd), w['eps_head'])
        qk = torch.addcmul(n * cos_w[:, i], n.roll(hd // 2, dims=-1), sin_w[:, i])  # normed, rotated q and k
        k_cache.view(B, -1, hd).index_put_((rows, slots), qk[:, nh:])
        v_cache.view(B, -1, hd).index_put_((rows, slots), qkv[:, heads * hd:].view(B, n_kv, hd))
        y = attend(qk[:, :nh].view(B, n_kv, nh // n_kv, hd), k_cache[:, :, :used], v_cache[:, :, :used], bias)
        x = torch.addmm(x, y.reshape(B, nh * hd), w_o_t)
        gate, up = F.linear(unit_rms(x, w['eps_hidden']), w_gu).chunk(2, dim=-1)
        x = torch.addmm(x, F.silu(gate) * up, w_down_t)
    return F.linear(unit_rms(x, w['eps_hidden']), w['head'])


def inductor_decode_step(w, tokens, cache, pos, bias):
    """fused_decode_step with attend_elementwise: the function generate(compile=True) compiles."""
    return fused_decode_step(w, tokens, cache, pos, bias, attend=attend_elementwise)


@functools.cache
def compiled_decode_step():
    """torch.compile(inductor_decode_step), built on first use and kept for the process (dynamo's
    own cache holds its graphs; inductor's on-disk cache makes a later process cheaper)."""
    return torch.compile(inductor_decode_step)


def mark_dynamic(tokens, cache, pos, bias):
    """Batch size, cache length and attended length vary from call to call: mark them dynamic
    so that one graph serves all (maybe_: a size-1 batch gets its own graph instead of an error)."""
    for t in (tokens, pos, bias):
        torch._dynamo.maybe_mark_dynamic(t, 0)
    torch._dynamo.maybe_mark_dynamic(bias, 3)
    for kv in cache:
        for t in kv:
            torch._dynamo.maybe_mark_dynamic(t, 0)
            torch._dynamo.maybe_mark_dynamic(t, 2)


def cpu_decode_step(model, compile):
    """step(tokens, cache, pos, used) -> logits for _decode_eager on CPU: fused_decode_step on
    the model's fused weights, through torch.compile when compile=True."""
    w = fuse_decode_weights(model)

    def step(tokens, cache, pos, used):
        bias = attention_bias(pos, used, w['embed'].dtype)
        if not compile:
            return fused_decode_step(w, tokens, cache, pos, bias)
        mark_dynamic(tokens, cache, pos, bias)
        return compiled_decode_step()(w, tokens, cache, pos, bias)
    return step


# -----------------------------------------------------------------------------
# decoding a batch of rows


def _keep_rows(cache, keep, used):
    """The cache of the live rows: rows keep[i] -> i in place (keep ascending; only the `used`
    slots written so far; each layer's gather copies before the write), then views of the
    first len(keep) rows. Nothing moves when only rows at the end finished (keep = arange)."""
    n_keep = keep.shape[0]
    if not torch.equal(keep, torch.arange(n_keep, device=keep.device)):
        for k, v in cache:
            k[:n_keep, :, :used] = k[keep, :, :used]
            v[:n_keep, :, :used] = v[keep, :, :used]
    return [(k[:n_keep], v[:n_keep]) for k, v in cache]


def _decode_eager(model, cache, first_tokens, first_logprobs, pos, row_ids, n, max_new_tokens,
                  sample, stop_ids, compile, progress):
    """Dynamic-shape decoding (CPU, or CUDA without graphs). Live tensors hold only unfinished
    rows (plus finished ones not yet compacted away). Returns the list of result dicts.
    compile: torch.compile the CPU step (ignored on this path's CUDA/attention-bias fallback)."""
    if first_tokens.is_cuda or model.config.attention_bias:  # model.py's forward (flash-attn's decode kernel)
        def step(tokens, cache, pos, used):
            view = [(k[:, :, :used], v[:, :, :used]) for k, v in cache]
            return model(tokens[:, None], kv_cache=view, input_pos=pos)[:, -1]
    else:
        step = cpu_decode_step(model, compile)
    R = first_tokens.shape[0]
    out_tokens = torch.empty(R, max_new_tokens, dtype=torch.long, device=first_tokens.device)
    out_logprobs = torch.empty(R, max_new_tokens, dtype=torch.float32, device=first_tokens.device)
    out_tokens[:, 0], out_logprobs[:, 0] = first_tokens, first_logprobs
    stop_at = torch.full((R,), max_new_tokens, dtype=torch.long, device=first_tokens.device)
    done = torch.zeros(R, dtype=torch.bool, device=first_tokens.device)
    if stop_ids is not None:
        done = torch.isin(first_tokens, stop_ids)
        stop_at.masked_fill_(done, 0)
    n_done = int(done.sum())
    count_every = host_sync_every(first_tokens.device)  # steps between host reads of the done count
    results = []
    tokens, used = first_tokens, int(pos.max()) + 1  # used = cache slots any live row needs this step
    steps = range(1, max_new_tokens)
    if progress:
        steps = tqdm(steps, desc='decode', leave=False)
    for t in steps:
        n_live = tokens.shape[0]
        if n_done and n_done >= COMPACT_FRACTION * n_live:
            # drop finished rows: hand them back, keep the rest at the front of the buffers
            fin = done.nonzero().squeeze(1).cpu()
            results += _finish(out_tokens[fin, :t].cpu(), out_logprobs[fin, :t].cpu(), stop_at[fin].cpu(),
                               row_ids[fin], n, max_new_tokens)
            keep = (~done).nonzero().squeeze(1)
            n_keep = keep.shape[0]
            if n_keep == 0:
                return results
            keep_cpu = keep.cpu()
            row_ids = row_ids[keep_cpu]
            tokens, pos = tokens[keep], pos[keep]
            out_tokens, out_logprobs, stop_at = out_tokens[keep], out_logprobs[keep], stop_at[keep]
            done = done[keep]
            cache = _keep_rows(cache, keep, used)
            n_done, n_live = 0, n_keep
            used = int(pos.max()) + 1
        logits = step(tokens, cache, pos, used)  # attends over the `used` slots only
        tokens, logprobs = sample(logits)
        out_tokens[:, t], out_logprobs[:, t] = tokens, logprobs
        if stop_ids is not None:
            hit = torch.isin(tokens, stop_ids) & ~done
            stop_at.masked_fill_(hit, t)
            done |= hit
            if t % count_every == 0:
                n_done = int(done.sum())
        pos += 1
        used += 1
    return results + _finish(out_tokens.cpu(), out_logprobs.cpu(), stop_at.cpu(), row_ids, n, max_new_tokens)


def _decode_static(model, cache, first_tokens, first_logprobs, pos, row_ids, n, max_new_tokens,
                   sample, stop_ids, use_graph, use_compile, progress):
    """Static-shape decoding: CUDA's path (the graph capture has not run on a GPU yet: see the
    module docstring), which static_shapes=True also runs on CPU. The batch never shrinks:
    finished rows keep their last token and position (they rewrite one slot of their own row,
    which nobody reads) and their outputs are ignored. The step logits = model(tok, cache, pos)
    reads/writes only the static tensors, so it can be captured once as a CUDA graph and
    replayed; sampling runs outside the graph."""
    R, device = first_tokens.shape[0], first_tokens.device
    static_tokens = first_tokens.clone()
    static_pos = pos.clone()

    def step():
        return model(static_tokens[:, None], kv_cache=cache, input_pos=static_pos)[:, -1]

    if use_compile:
        step = torch.compile(step, dynamic=False)
    run = step
    if use_graph and max_new_tokens > 1:
        # warm up on a side stream (allocator, compile, cuBLAS handles), then capture. The warm-up
        # writes the first step's k/v into the slots the first replay rewrites with the same values.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_logits = step()

        def run():
            graph.replay()
            return static_logits

    out_tokens = torch.empty(R, max_new_tokens, dtype=torch.long, device=device)
    out_logprobs = torch.empty(R, max_new_tokens, dtype=torch.float32, device=device)
    out_tokens[:, 0], out_logprobs[:, 0] = first_tokens, first_logprobs
    stop_at = torch.full((R,), max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    if stop_ids is not None:
        hit = torch.isin(first_tokens, stop_ids)
        stop_at.masked_fill_(hit, 0)
        done |= hit
    steps = range(1, max_new_tokens)
    if progress:
        steps = tqdm(steps, desc='decode', leave=False)
    for t in steps:
        if stop_ids is not None and t % GRAPH_SYNC_EVERY == 0 and bool(done.all()):
            break
        logits = run()
        tokens, logprobs = sample(logits)
        out_tokens[:, t], out_logprobs[:, t] = tokens, logprobs
        live = ~done
        if stop_ids is not None:
            hit = torch.isin(tokens, stop_ids) & live
            stop_at.masked_fill_(hit, t)
            done |= hit
        # next input: live rows feed their new token one slot further; finished rows stay put
        static_tokens.copy_(torch.where(live, tokens, static_tokens))
        static_pos.add_(live.long())
    return _finish(out_tokens.cpu(), out_logprobs.cpu(), stop_at.cpu(), row_ids, n, max_new_tokens)


# -----------------------------------------------------------------------------
# the entry point


@torch.inference_mode()
def generate(model, prompts, n=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
             stop_token_ids=(), seed=None, batch_size=None, cuda_graph=False, compile=False, static_shapes=None,
             progress=False):
    """Sample n continuations of every prompt (a list of token-id lists). Returns a list of
    len(prompts) * n dicts in prompt order (prompt 0's n samples first), each with
    prompt_index, tokens (generated ids, the stop token included when hit), logprobs (float
    per token, under the distribution sampled from), finish_reason ('stop' | 'length').
    batch_size caps the rows decoded at once (rows are grouped by prompt length to cut
    padding). cuda_graph: CUDA only (static-shape decode, see the docstring). compile: on CUDA
    the static-shape step, on CPU the fused step, through torch.compile (tens of seconds the
    first time in a process on a cold inductor cache; pays for long or batch-1 decoding).
    static_shapes: None = the static-shape loop on CUDA with cuda_graph or compile, the
    dynamic one otherwise; True / False force it (True on CPU runs CUDA's loop without a graph,
    compile=True then compiling model.py's forward with static shapes: one graph per batch
    shape, rows x cache slots, as on CUDA).
    seed: same seed and arguments -> same outputs; None draws a fresh seed."""
    stop_token_ids = [int(s) for s in stop_token_ids]
    if isinstance(prompts, (list, tuple)):
        prompts = [p.tolist() if torch.is_tensor(p) else list(p) for p in prompts]
    _check_args(model, prompts, n, max_new_tokens, temperature, top_p, top_k, stop_token_ids)
    device = model.model.embed_tokens.weight.device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    stop_ids = torch.tensor(stop_token_ids, dtype=torch.long, device=device) if stop_token_ids else None

    def sample(logits):
        return sample_from_logits(logits, temperature, top_p, top_k, generator)

    n_rows = len(prompts) * n
    results = [None] * n_rows
    if max_new_tokens == 0:
        return [{'prompt_index': r // n, 'tokens': [], 'logprobs': [], 'finish_reason': 'length'}
                for r in range(n_rows)]
    batch_size = n_rows if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    # rows (prompt p, sample s) -> row id p * n + s; batches of similar prompt lengths (stable sort)
    order = sorted(range(n_rows), key=lambda r: len(prompts[r // n]))
    if cuda_graph and static_shapes is False:
        raise ValueError('generate: cuda_graph=True replays the static-shape loop; static_shapes=False contradicts it')
    if static_shapes is None:
        static_shapes = device.type == 'cuda' and (cuda_graph or compile)  # compile wants static shapes too
    for start in range(0, n_rows, batch_size):
        rows = order[start:start + batch_size]
        distinct = list(dict.fromkeys(r // n for r in rows))  # prompts in row order: src below is sorted
        slot_of = {p: i for i, p in enumerate(distinct)}
        batch_prompts = [prompts[p] for p in distinct]
        max_len = max(len(p) for p in batch_prompts) + max_new_tokens  # cache slots per row
        cache, logits, lens = _prefill(model, batch_prompts, len(rows), max_len)
        # fan out: row i of the decode batch gets its prompt's prefilled cache row, in place
        src = torch.tensor([slot_of[r // n] for r in rows])
        _fan_out(cache, src, max(len(p) for p in batch_prompts))
        if len(rows) != len(distinct):
            logits, lens = logits.index_select(0, src.to(device)), lens.index_select(0, src.to(device))
        first_tokens, first_logprobs = sample(logits)  # one independent draw per row
        row_ids = torch.tensor(rows)
        pos = lens.clone()  # the first generated token is written at slot len
        if static_shapes:
            batch_results = _decode_static(model, cache, first_tokens, first_logprobs, pos, row_ids, n, max_new_tokens,
                                           sample, stop_ids, cuda_graph and device.type == 'cuda', compile, progress)
        else:
            batch_results = _decode_eager(model, cache, first_tokens, first_logprobs, pos, row_ids, n,
                                          max_new_tokens, sample, stop_ids, compile, progress)
        for row, res in batch_results:
            results[row] = res
    return results

