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
   over the cache slots in use so far. On CPU the step is FusedDecodeStep, the model's
   T=1 forward with fused weights and fewer ops (a small model's CPU step costs its op
   count more than its FLOPs); on CUDA it is model.py's forward. CUDA static path (cuda_graph=True): shapes never
   change, the decode step is captured once as a CUDA graph and replayed; finished rows
   stay in the batch, masked (their input frozen, their outputs ignored).

Sampling, per row, from the logits x of the step:
    temperature == 0:  token = argmax x,  logprob = log_softmax(x)[token]   (greedy)
    otherwise:         z = x / T, top-k then top-p filtering (removed entries -> -inf),
                       token ~ softmax(z),  logprob = log_softmax(z)[token]
The log-prob is the one of the distribution actually sampled from: the behaviour
log-prob the RL loss needs. The draw uses the exponential race (Gumbel-max):
    token = argmax_i (z_i - log E_i),  E_i ~ Exp(1) i.i.d.
which picks i with probability softmax(z)_i and costs one fill of random numbers per step,
all from one torch.Generator: same seed (and same arguments) -> same outputs.

What has been measured (BENCHMARKS.md): the CPU path only, FusedDecodeStep included; its
greedy tokens equal transformers' at every position and tests/test_sampler.py runs on CPU.
The CUDA paths (model.py's forward on CUDA, the static-shape decode with a CUDA graph or
torch.compile, bf16 weights) have not run on a GPU yet: none was available to this project
so far, so their correctness and speed are unchecked.

Run the tests with `python -m pytest tests/test_sampler.py` and the speed comparison
against transformers with `python bench_sampler.py` (`--device=cuda` on a GPU).
"""

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

# -----------------------------------------------------------------------------
# constants

COMPACT_FRACTION = 0.25  # eager path: drop finished rows once they are >= this share of the live batch
GRAPH_SYNC_EVERY = 16  # CUDA: the host reads the device's "done" flags every this many steps (a sync)
MIN_EXP = 1e-30  # floor for the Exp(1) draws of the race, so log E is finite (E = 0 has prob ~0)

# -----------------------------------------------------------------------------
# logits -> tokens


def filter_logits(logits, top_k=0, top_p=1.0):
    """Top-k then top-p (nucleus) filtering of logits [..., V]: removed entries become -inf.
    top_k: keep the k largest (ties at the k-th value are all kept); 0 = off.
    top_p: keep the smallest prefix of the sorted distribution (renormalized after top-k)
    whose mass reaches top_p, i.e. drop token j when the mass strictly before it (sorted
    descending) is already >= top_p; the most likely token is always kept. 1.0 = off."""
    if top_k < 0:
        raise ValueError(f'top_k must be >= 0 (0 = off), got {top_k}')
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f'top_p must be in (0, 1], got {top_p}')
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # exclusive cumulative sum
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocab order
        logits = logits.masked_fill(drop, float('-inf'))
    return logits


def sample_from_logits(logits, temperature=1.0, top_p=1.0, top_k=0, generator=None):
    """logits [B, V] -> (tokens [B] long, logprobs [B] float32), see the module docstring.
    Greedy at temperature 0 (log-prob under the raw logits)."""
    if temperature < 0:
        raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature}')
    x = logits.float()
    if temperature == 0:
        tokens = x.argmax(dim=-1)
    else:
        if temperature != 1.0:
            x = x / temperature
        x = filter_logits(x, top_k, top_p)
        # exponential race: argmax_i z_i - log E_i with E_i ~ Exp(1) draws i w.p. softmax(z)_i
        race = torch.empty_like(x).exponential_(generator=generator).clamp_(min=MIN_EXP).log_()
        tokens = torch.sub(x, race, out=race).argmax(dim=-1)
    # logprob = z[token] - logsumexp(z), without materializing the whole log-softmax
    logprobs = x.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(x, dim=-1)
    return tokens, logprobs


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


class FusedDecodeStep:
    """model(tokens[:, None], kv_cache, input_pos=pos)[:, -1] for one new token per row (T=1),
    rewritten for CPU decoding, where a step of a small model costs its number of ops, not its
    FLOPs. Same math as model.py's forward (tests/test_sampler.py checks it against the
    reference and transformers), with the weights rearranged once per generate() call:
    - q, k, v in one matmul, gate and up in another;
    - the RMSNorm weights before a matmul are folded into its columns (rms(x) * w @ W^T =
      rms(x) @ (W * w)^T), the final norm's into a copy of the LM head;
    - RoPE folded into that matmul: rotate_half is a signed permutation of q's and k's output
      features, so the same matmul also emits rotate_half(q) and rotate_half(k), one RMSNorm
      (unchanged by a signed permutation) normalizes both, and
      rope(w * n) = n * (w * cos) + rotate_half(n) * (swap(w) * sin),  swap(w) = (w2, w1),
      whose per-row factors (1/sqrt(head_dim) folded into q's) are built once a step for all
      layers at once;
    - the new keys/values go into the cache with one index_put_ each, and attention at T=1 is
      two small matmuls and a softmax over the cache slots in use (masked past each row's position).
    ~17 ops a layer instead of ~30. Costs one extra copy of the matrices (fine on CPU for small
    models; the CUDA path keeps model.py's forward)."""

    def __init__(self, model):
        cfg = model.config
        if cfg.attention_bias:
            raise ValueError('FusedDecodeStep: attention_bias=True is not supported (use model.py\'s forward)')
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.hidden, self.eps = cfg.hidden_size, cfg.rms_norm_eps
        nh, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        half = hd // 2
        # output rows of rotate_half(x) = (-x2, x1) per head, as a signed permutation of the rows
        perm = torch.cat([torch.arange(half, hd), torch.arange(half)])
        sign = torch.cat([-torch.ones(half), torch.ones(half)])

        def rotated(w, heads):  # [heads * hd, H] -> rows of rotate_half(x @ w^T)
            w = w.view(heads, hd, -1)
            return (w[:, perm] * sign[:, None].to(w.dtype)).reshape(heads * hd, -1)

        self.layers, norm_w, swap_w = [], [], []
        for blk in model.model.layers:
            a, m = blk.self_attn, blk.mlp
            w_qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, rotated(a.q_proj.weight, nh),
                               rotated(a.k_proj.weight, nkv), a.v_proj.weight])
            w_gu = torch.cat([m.gate_proj.weight, m.up_proj.weight])
            self.layers.append((w_qkv * blk.input_layernorm.weight, a.o_proj.weight.t(),
                                w_gu * blk.post_attention_layernorm.weight, m.down_proj.weight.t()))
            qk_w = torch.cat([(a.q_norm.weight / math.sqrt(hd)).expand(nh, hd), a.k_norm.weight.expand(nkv, hd)])
            norm_w.append(qk_w)
            swap_w.append(qk_w[:, perm])
        self.norm_w, self.swap_w = torch.stack(norm_w), torch.stack(swap_w)  # [L, heads, hd]
        self.embed = model.model.embed_tokens.weight
        self.head = model.lm_head.weight * model.model.norm.weight
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))

    def __call__(self, tokens, cache, pos, used):
        """tokens [B], cache: list of (k, v) [B, n_kv, S, hd] per layer, pos [B] (the slot this
        token goes to), used = slots attended to (> pos.max()). Returns logits [B, V]."""
        B = tokens.shape[0]
        nh, nkv, hd, H, eps = self.n_heads, self.n_kv, self.head_dim, self.hidden, self.eps
        heads = nh + nkv
        x = F.embedding(tokens, self.embed)
        # per-row RoPE factors of every layer (fp32 angles as model.rope_cos_sin computes them)
        angles = pos[:, None].float() * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)[:, None, None]  # [B, 1, 1, hd]
        cos_w = angles.cos().to(x.dtype) * self.norm_w  # [B, L, heads, hd]
        sin_w = angles.sin().to(x.dtype) * self.swap_w
        # query at position pos[b] sees slots 0..pos[b] of its row
        bias = torch.zeros(B, nkv, 1, used, dtype=x.dtype).masked_fill_(
            torch.arange(used) > pos[:, None, None, None], float('-inf')).view(B * nkv, 1, used)
        rows = torch.arange(B)[:, None].expand(B, nkv)
        slots = torch.arange(nkv)[None] * cache[0][0].shape[2] + pos[:, None]  # into k.view(B, n_kv * S, hd)
        for i, (w_qkv, w_o_t, w_gu, w_down_t) in enumerate(self.layers):
            k_cache, v_cache = cache[i]
            qkv = F.linear(F.rms_norm(x, (H,), None, eps), w_qkv)
            n = F.rms_norm(qkv[:, :2 * heads * hd].view(B, 2 * heads, hd), (hd,), None, eps)
            qk = torch.addcmul(n[:, :heads] * cos_w[:, i], n[:, heads:], sin_w[:, i])  # [B, heads, hd]
            k_cache.view(B, -1, hd).index_put_((rows, slots), qk[:, nh:])
            v_cache.view(B, -1, hd).index_put_((rows, slots), qkv[:, 2 * heads * hd:].view(B, nkv, hd))
            # 3-D batched matmuls over (row, k/v head): GQA's query heads grouped by their k/v head
            q = qk[:, :nh].reshape(B * nkv, nh // nkv, hd)
            scores = torch.baddbmm(bias, q, k_cache[:, :, :used].reshape(B * nkv, used, hd).transpose(1, 2))
            y = torch.bmm(torch.softmax(scores, dim=-1), v_cache[:, :, :used].reshape(B * nkv, used, hd))
            x = torch.addmm(x, y.view(B, nh * hd), w_o_t)
            gate, up = F.linear(F.rms_norm(x, (H,), None, eps), w_gu).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate).mul_(up), w_down_t)
        return F.linear(F.rms_norm(x, (H,), None, eps), self.head)


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
                  sample, stop_ids, progress):
    """Dynamic-shape decoding (CPU, or CUDA without graphs). Live tensors hold only unfinished
    rows (plus finished ones not yet compacted away). Returns the list of result dicts."""
    if first_tokens.is_cuda or model.config.attention_bias:  # model.py's forward (flash-attn's decode kernel)
        def step(tokens, cache, pos, used):
            view = [(k[:, :, :used], v[:, :, :used]) for k, v in cache]
            return model(tokens[:, None], kv_cache=view, input_pos=pos)[:, -1]
    else:
        step = FusedDecodeStep(model)
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


def _decode_static_cuda(model, cache, first_tokens, first_logprobs, pos, row_ids, n, max_new_tokens,
                        sample, stop_ids, use_graph, use_compile, progress):
    """Static-shape decoding on CUDA (not yet run on a GPU: see the module docstring).
    The batch never shrinks: finished rows keep their last token and position (they rewrite
    one slot of their own row, which nobody reads) and their outputs are ignored. The step
    logits = model(tok, cache, pos) reads/writes only the static tensors, so it can be
    captured once as a CUDA graph and replayed; sampling runs outside the graph."""
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
             stop_token_ids=(), seed=None, batch_size=None, cuda_graph=False, compile=False, progress=False):
    """Sample n continuations of every prompt (a list of token-id lists). Returns a list of
    len(prompts) * n dicts in prompt order (prompt 0's n samples first), each with
    prompt_index, tokens (generated ids, the stop token included when hit), logprobs (float
    per token, under the distribution sampled from), finish_reason ('stop' | 'length').
    batch_size caps the rows decoded at once (rows are grouped by prompt length to cut
    padding); cuda_graph / compile only act on CUDA (static-shape decode, see the docstring).
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
    static = device.type == 'cuda' and (cuda_graph or compile)  # compile wants static shapes too
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
        if static:
            batch_results = _decode_static_cuda(model, cache, first_tokens, first_logprobs, pos, row_ids, n,
                                                max_new_tokens, sample, stop_ids, cuda_graph, compile, progress)
        else:
            batch_results = _decode_eager(model, cache, first_tokens, first_logprobs, pos, row_ids, n,
                                          max_new_tokens, sample, stop_ids, progress)
        for row, res in batch_results:
            results[row] = res
    return results

