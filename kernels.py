"""
Per-token log-probabilities (and entropies) at a temperature, forward and backward,
without ever holding a full fp32 [tokens, vocab] log-softmax.

    logprob[i] = log softmax(x[i] / T)[t[i]] = x[i, t[i]] / T - logsumexp_j(x[i, j] / T)
    entropy[i] = -sum_j p[i, j] log p[i, j] = lse[i] - sum_j p[i, j] * x[i, j] / T

Two entry points, both differentiable with a per-token upstream gradient g[i]
(RL advantages multiply per token), both returning float32 [N]:

    token_logprobs(logits[N, V], targets[N], temperature=1.0, backend='auto',
                   return_entropy=False)
    fused_linear_token_logprobs(hidden[N, H], weight[V, H], targets[N], temperature=1.0,
                                backend='auto', return_entropy=False, chunk_size=None,
                                compute_dtype=None)

The gradient of logprob[i] w.r.t. its logits row is
    d logprob[i] / d x[i, j] = (onehot(t[i])_j - softmax(x[i] / T)_j) / T
so backward only needs x, t and the saved lse[i]; nothing else [N, V] is kept.

Conventions:
- targets == -100 (IGNORE_INDEX) gives logprob 0, entropy 0 and zero gradient.
- The entropy is returned *without* gradient (it is a diagnostic / detached bonus here).
- Logits must be finite (masked -inf vocab entries are not supported).
- Gradients come back in the input dtype; the softmax / logsumexp math is fp32.

Backends:
- 'torch'  : chunked PyTorch (the CPU path, and the reference): rows are processed
             in chunks so at most a [chunk, V] fp32 temporary lives at a time.
- 'triton' : Triton kernels, one program per row looping over vocab blocks with an
             online max / sum-exp (fp32 accumulation, int64 row offsets, any V).
             Needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is first
             imported (then it runs on CPU tensors; that is how the tests run it).
- 'auto'   : 'triton' on CUDA tensors when triton imports, 'torch' otherwise.

The fused linear version chunks over tokens: per chunk it computes
logits_c = hidden_c @ weight.T in torch (a cuBLAS matmul), then the per-row kernel
(Triton or torch) on that chunk; backward recomputes the chunk logits and turns them
into grad_logits_c in place, then grad_hidden_c = grad_logits_c @ weight and
grad_weight += grad_logits_c.T @ hidden_c. Peak extra memory is O(chunk * V), not O(N * V).
Precision: the three matmuls run in one compute dtype, set explicitly rather than left to
autocast (which is off by the time backward runs): autocast's dtype for fp32 inputs under
autocast (fp32 master weights: bf16 tensor cores), else the inputs' dtype, or `compute_dtype`
when given. Backward recomputes exactly the forward's logits, so exp(z - lse) is a
distribution (fp32 logits recomputed against a bf16 forward's lse gave rows summing to
0.97..1.03). grad_weight sums the N / chunk chunk products (each one matmul with fp32
accumulation inside) in an fp32 accumulator and comes back in the weight's dtype.

Run `python -m pytest tests/test_kernels.py` for the tests and `python bench_logprobs.py`
for memory / time against the naive log_softmax.
"""

import math
import os

import torch

try:  # guarded: `import kernels` (and so model.py) must work where triton is absent or broken
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the machine
    triton = None
    tl = None

IGNORE_INDEX = -100  # target value of rows that give 0 and get no gradient (as in F.cross_entropy)
TORCH_CHUNK_ELEMENTS = 2**22  # torch backend: rows per chunk = this // V (a 16 MB fp32 temporary)
# fused default: tokens per chunk = this // V. CPU: 4 MB of fp32 chunk logits, so the softmax
# passes over a chunk run from cache (32 MB chunks made the tiny model's loss 1.5x slower). CUDA:
# larger chunks (~440 tokens at V=151936, 128 MB bf16) so each chunk matmul stays compute-bound
# instead of re-reading the whole [V, H] weight for every few tokens.
FUSED_CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**26}
TRITON_BLOCK_V = 4096  # vocab columns one Triton program handles per loop step
TRITON_NUM_WARPS = 8  # warps per row program (a 4096-wide fp32 block = 16 values per thread)

# -----------------------------------------------------------------------------
# argument checks


def _check_temperature(temperature):
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"kernels: temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _check_targets(targets, num_rows, vocab_size, where):
    if targets.dim() != 1 or targets.shape[0] != num_rows:
        raise ValueError(f"kernels.{where}: targets must have shape [{num_rows}], got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"kernels.{where}: targets must be int64 or int32, got {targets.dtype}")
    if targets.numel() > 0:
        bad = ((targets < 0) & (targets != IGNORE_INDEX)) | (targets >= vocab_size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"kernels.{where}: targets[{i}] = {int(targets[i])} is outside "
                             f"[0, {vocab_size}) and is not the ignore index {IGNORE_INDEX}")


def _resolve_backend(backend, tensor):
    if backend == "auto":
        return "triton" if (tensor.is_cuda and triton is not None) else "torch"
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if triton is None:
            raise RuntimeError("kernels: backend='triton' but triton is not installed; use backend='torch'")
        if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("kernels: backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set "
                               "before triton is imported to run the kernels on CPU")
        return "triton"
    raise ValueError(f"kernels: backend must be 'auto', 'torch' or 'triton', got {backend!r}")

# -----------------------------------------------------------------------------
# torch backend: one chunk of rows at a time, fp32 math on a [rows, V] temporary


def _rows_forward_torch(x, targets, temperature, with_entropy):
    """x [n, V] any float dtype -> (logprob, lse, entropy or None), fp32 [n] each."""
    z = x.float() / temperature  # the one fp32 [n, V] temporary (a fresh tensor even for fp32 x)
    valid = targets != IGNORE_INDEX
    safe_targets = torch.where(valid, targets, 0).long()
    target_z = z.gather(1, safe_targets[:, None]).squeeze(1)
    lse = torch.logsumexp(z, dim=1)
    logprob = torch.where(valid, target_z - lse, 0.0)
    entropy = None
    if with_entropy:
        # H = -sum p log p with log p = z - lse, computed in place on z
        log_p = z.sub_(lse[:, None])
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        entropy = torch.where(valid, entropy, 0.0)
    return logprob, lse, entropy


def _rows_backward_torch(x, targets, lse, grad_logprob, temperature, out=None):
    """grad_x = g * (onehot(t) - softmax(x / T)) / T, in x's dtype (written to `out` if given)."""
    valid = targets != IGNORE_INDEX
    g_over_t = torch.where(valid, grad_logprob.float(), 0.0) / temperature  # [n]
    grad = (x.float() / temperature).sub_(lse[:, None]).exp_()  # softmax, fp32 [n, V]
    grad.mul_(-g_over_t[:, None])
    safe_targets = torch.where(valid, targets, 0).long()
    grad.scatter_add_(1, safe_targets[:, None], g_over_t[:, None])  # ignored rows add 0
    if out is None:
        return grad.to(x.dtype)
    out.copy_(grad)
    return out

# -----------------------------------------------------------------------------
# triton backend: one program per row, online logsumexp over vocab blocks

if triton is not None:

    @triton.jit
    def _logprob_forward_kernel(x_ptr, targets_ptr, logprob_ptr, lse_ptr, entropy_ptr,
                                row_stride, V, inv_temperature,
                                BLOCK_V: tl.constexpr, WITH_ENTROPY: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # int64: row * row_stride exceeds 2^31 at N=8192, V=151936
        x_row = x_ptr + row * row_stride
        target = tl.load(targets_ptr + row).to(tl.int64)
        # running max m, running s = sum exp(z - m), running sz = sum exp(z - m) * z
        m = float("-inf")
        s = 0.0
        sz = 0.0
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < V
            z = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temperature
            m_new = tl.maximum(m, tl.max(z, axis=0))
            rescale = tl.exp(m - m_new)  # exp(-inf) = 0 on the first block
            e = tl.exp(z - m_new)  # masked lanes: exp(-inf) = 0
            s = s * rescale + tl.sum(e, axis=0)
            if WITH_ENTROPY:
                sz = sz * rescale + tl.sum(e * tl.where(mask, z, 0.0), axis=0)  # avoid 0 * -inf
            m = m_new
        lse = m + tl.log(s)
        valid = target != -100
        safe_target = tl.where(valid, target, 0)
        target_z = tl.load(x_row + safe_target).to(tl.float32) * inv_temperature
        tl.store(logprob_ptr + row, tl.where(valid, target_z - lse, 0.0))
        tl.store(lse_ptr + row, lse)
        if WITH_ENTROPY:
            # H = lse - E_p[z] = lse - sz / s
            tl.store(entropy_ptr + row, tl.where(valid, lse - sz / s, 0.0))

    @triton.jit
    def _logprob_backward_kernel(x_ptr, targets_ptr, lse_ptr, grad_logprob_ptr, grad_x_ptr,
                                 x_row_stride, grad_row_stride, V, inv_temperature,
                                 BLOCK_V: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * x_row_stride
        grad_row = grad_x_ptr + row * grad_row_stride  # may alias x_row: each element is read before written
        target = tl.load(targets_ptr + row).to(tl.int64)
        lse = tl.load(lse_ptr + row)
        g = tl.load(grad_logprob_ptr + row).to(tl.float32)
        g_over_t = tl.where(target != -100, g, 0.0) * inv_temperature
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < V
            z = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_temperature
            p = tl.exp(z - lse)
            onehot = tl.where(cols == target, 1.0, 0.0)  # never matches the ignore index
            grad = g_over_t * (onehot - p)
            tl.store(grad_row + cols, grad.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _rows_forward_triton(x, targets, temperature, with_entropy):
    n, V = x.shape
    logprob = torch.empty(n, dtype=torch.float32, device=x.device)
    lse = torch.empty(n, dtype=torch.float32, device=x.device)
    entropy = torch.empty(n, dtype=torch.float32, device=x.device) if with_entropy else lse  # dummy ptr
    if n > 0:
        block = min(TRITON_BLOCK_V, triton.next_power_of_2(V))
        _logprob_forward_kernel[(n,)](x, targets, logprob, lse, entropy, x.stride(0), V, 1.0 / temperature,
                                      BLOCK_V=block, WITH_ENTROPY=with_entropy, num_warps=TRITON_NUM_WARPS)
    return logprob, lse, (entropy if with_entropy else None)


def _rows_backward_triton(x, targets, lse, grad_logprob, temperature, out=None):
    n, V = x.shape
    grad = torch.empty_like(x) if out is None else out
    if n > 0:
        block = min(TRITON_BLOCK_V, triton.next_power_of_2(V))
        _logprob_backward_kernel[(n,)](x, targets, lse, grad_logprob.contiguous(), grad,
                                       x.stride(0), grad.stride(0), V, 1.0 / temperature,
                                       BLOCK_V=block, num_warps=TRITON_NUM_WARPS)
    return grad


_ROWS_FORWARD = {"torch": _rows_forward_torch, "triton": _rows_forward_triton}
_ROWS_BACKWARD = {"torch": _rows_backward_torch, "triton": _rows_backward_triton}

# -----------------------------------------------------------------------------
# token_logprobs: logits given


def _row_chunks(num_rows, rows_per_chunk):
    for start in range(0, num_rows, rows_per_chunk):
        yield start, min(start + rows_per_chunk, num_rows)


class _TokenLogprobs(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits, targets, temperature, backend, with_entropy):
        N, V = logits.shape
        # triton keeps only O(N) fp32 state, so one launch; torch chunks the rows
        rows = N if backend == "triton" else max(1, TORCH_CHUNK_ELEMENTS // V)
        parts = [_ROWS_FORWARD[backend](logits[a:b], targets[a:b], temperature, with_entropy)
                 for a, b in _row_chunks(N, rows)]
        empty = torch.zeros(0, dtype=torch.float32, device=logits.device)
        logprob = torch.cat([p[0] for p in parts]) if parts else empty
        lse = torch.cat([p[1] for p in parts]) if parts else empty
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature, ctx.backend, ctx.rows = temperature, backend, rows
        if not with_entropy:
            return logprob
        entropy = torch.cat([p[2] for p in parts]) if parts else empty
        ctx.mark_non_differentiable(entropy)
        return logprob, entropy

    @staticmethod
    def backward(ctx, grad_logprob, *unused_grad_entropy):
        logits, targets, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        if grad_logprob is None:
            return grad_logits.zero_(), None, None, None, None
        for a, b in _row_chunks(logits.shape[0], ctx.rows):
            _ROWS_BACKWARD[ctx.backend](logits[a:b], targets[a:b], lse[a:b], grad_logprob[a:b],
                                        ctx.temperature, out=grad_logits[a:b])
        return grad_logits, None, None, None, None


def token_logprobs(logits, targets, temperature=1.0, backend="auto", return_entropy=False):
    """log softmax(logits / T)[targets] as float32 [N]; (logprob, entropy) if return_entropy."""
    if logits.dim() != 2:
        raise ValueError(f"kernels.token_logprobs: logits must be [N, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"kernels.token_logprobs: logits must be floating point, got {logits.dtype}")
    temperature = _check_temperature(temperature)
    _check_targets(targets, logits.shape[0], logits.shape[1], "token_logprobs")
    backend = _resolve_backend(backend, logits)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _TokenLogprobs.apply(logits, targets.contiguous(), temperature, backend, bool(return_entropy))

# -----------------------------------------------------------------------------
# fused_linear_token_logprobs: hidden @ weight.T per token chunk, recomputed in backward


class _FusedLinearTokenLogprobs(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, backend, with_entropy, chunk_size, compute_dtype):
        N = hidden.shape[0]
        logprob = torch.empty(N, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(N, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(N, dtype=torch.float32, device=hidden.device) if with_entropy else None
        w = weight.to(compute_dtype)  # one cast for all chunks (a no-op when already there)
        with torch.autocast(hidden.device.type, enabled=False):  # the matmul runs in compute_dtype, as said
            for a, b in _row_chunks(N, chunk_size):
                logits = hidden[a:b].to(compute_dtype) @ w.T  # [chunk, V]; freed each iteration
                lp, ls, ent = _ROWS_FORWARD[backend](logits, targets[a:b], temperature, with_entropy)
                logprob[a:b], lse[a:b] = lp, ls
                if with_entropy:
                    entropy[a:b] = ent
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature, ctx.backend, ctx.chunk_size, ctx.compute_dtype = temperature, backend, chunk_size, compute_dtype
        if not with_entropy:
            return logprob
        ctx.mark_non_differentiable(entropy)
        return logprob, entropy

    @staticmethod
    def backward(ctx, grad_logprob, *unused_grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # grad_weight sums over every token chunk: an fp32 accumulator whatever the compute dtype
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        if grad_logprob is None or not (need_hidden or need_weight):
            return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None, None, None, None
        cdt = ctx.compute_dtype
        w = weight.to(cdt)
        with torch.autocast(hidden.device.type, enabled=False):  # every matmul below is explicitly in cdt
            for a, b in _row_chunks(hidden.shape[0], ctx.chunk_size):
                h = hidden[a:b].to(cdt)
                # recompute the forward's exact logits (same dtype, same matmul), so softmax = exp(z - lse)
                # sums to 1 against the saved lse; then turn them into d logits in place
                logits = h @ w.T
                grad_logits = _ROWS_BACKWARD[ctx.backend](logits, targets[a:b], lse[a:b], grad_logprob[a:b],
                                                          ctx.temperature, out=logits)
                if need_hidden:  # [c, V] @ [V, H]: one matmul, fp32 accumulation inside it
                    grad_hidden[a:b] = grad_logits @ w
                if need_weight:  # [V, c] @ [c, H], added to the fp32 sum
                    if cdt == torch.float32:
                        grad_weight.addmm_(grad_logits.T, h)
                    else:
                        grad_weight += grad_logits.T @ h
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None, None, None, None


def default_chunk_size(vocab_size, device):
    """Tokens per chunk of the fused path: FUSED_CHUNK_ELEMENTS[device type] // V, at least 1."""
    elements = FUSED_CHUNK_ELEMENTS["cuda" if torch.device(device).type == "cuda" else "cpu"]
    return max(1, elements // vocab_size)


def fused_compute_dtype(tensor, compute_dtype=None):
    """The dtype the fused path computes logits in: `compute_dtype` when given, else autocast's
    dtype when autocast is on for the tensor's device and the tensor is fp32 (fp32 master weights
    under bf16 autocast), else the tensor's own dtype."""
    if compute_dtype is not None:
        return compute_dtype
    device_type = tensor.device.type
    if tensor.dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


def fused_linear_token_logprobs(hidden, weight, targets, temperature=1.0, backend="auto",
                                return_entropy=False, chunk_size=None, compute_dtype=None):
    """log softmax(hidden @ weight.T / T)[targets] as float32 [N], never holding [N, V] logits.

    chunk_size: tokens per chunk; None picks default_chunk_size(V, device).
    compute_dtype: dtype of the logits matmuls, forward and backward (fused_compute_dtype: None =
    autocast's dtype for fp32 inputs under autocast, else the inputs' dtype). Pass torch.float32
    for fp32 logits under autocast (e.g. both sides of a PPO ratio).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"kernels.fused_linear_token_logprobs: need hidden [N, H] and weight [V, H], got "
                         f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype or not hidden.is_floating_point():
        raise TypeError(f"kernels.fused_linear_token_logprobs: hidden ({hidden.dtype}) and weight "
                        f"({weight.dtype}) must share one floating dtype")
    temperature = _check_temperature(temperature)
    V = weight.shape[0]
    _check_targets(targets, hidden.shape[0], V, "fused_linear_token_logprobs")
    backend = _resolve_backend(backend, hidden)
    if chunk_size is None:
        chunk_size = default_chunk_size(V, hidden.device)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"kernels.fused_linear_token_logprobs: chunk_size must be an int >= 1, got {chunk_size!r}")
    compute_dtype = fused_compute_dtype(hidden, compute_dtype)
    if not compute_dtype.is_floating_point:
        raise TypeError(f"kernels.fused_linear_token_logprobs: compute_dtype must be floating, got {compute_dtype}")
    return _FusedLinearTokenLogprobs.apply(hidden.contiguous(), weight.contiguous(), targets.contiguous(),
                                           temperature, backend, bool(return_entropy), chunk_size, compute_dtype)
