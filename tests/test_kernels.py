"""
Tests for kernels.py: per-token log-probs / entropy, both backends, against a float64
log_softmax(x / T).gather() reference. The Triton kernels run on CPU through the Triton
interpreter (TRITON_INTERPRET=1 must be set before triton is imported, hence at the top).

    python -m pytest tests/test_kernels.py -q
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before kernels (and so triton) is imported

import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import kernels  # noqa: E402

BACKENDS = ["torch", "triton"]
ODD_VOCAB = 1001  # not a multiple of any block size
SMALL_BLOCK_V = 256  # so ODD_VOCAB spans 4 Triton blocks, the last one partial

# -----------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def small_blocks_and_chunks(monkeypatch):
    # force several vocab blocks (triton) and several row chunks (torch) on tiny shapes
    monkeypatch.setattr(kernels, "TRITON_BLOCK_V", SMALL_BLOCK_V)
    monkeypatch.setattr(kernels, "TORCH_CHUNK_ELEMENTS", 3 * ODD_VOCAB)  # 3 rows per chunk


def reference_logprobs(logits, targets, temperature):
    """float64 log_softmax(x / T).gather(), ignored rows 0, and the float64 entropy."""
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)
    valid = targets != kernels.IGNORE_INDEX
    logprob = log_p.gather(1, targets.clamp(min=0)[:, None]).squeeze(1) * valid
    entropy = -(log_p.exp() * log_p).sum(-1) * valid
    return logprob, entropy


def make_inputs(N, V, dtype, seed=0, ignore=(1,)):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(N, V, generator=gen)).to(dtype)
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[list(ignore)] = kernels.IGNORE_INDEX
    upstream = torch.randn(N, generator=gen)  # per-token "advantages"
    return logits, targets, upstream


def value_and_grad(fn, logits, targets, upstream, temperature):
    x = logits.clone().requires_grad_()
    out = fn(x, targets, temperature)
    (grad,) = torch.autograd.grad((out.double() * upstream.double()).sum(), x)
    return out.detach(), grad

# -----------------------------------------------------------------------------
# token_logprobs


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_odd_vocab_with_temperature_matches_float64_values_and_grads(backend):
    logits, targets, upstream = make_inputs(8, ODD_VOCAB, torch.float32)
    T = 0.7
    got, got_grad = value_and_grad(lambda x, t, T: kernels.token_logprobs(x, t, T, backend=backend),
                                   logits, targets, upstream, T)
    ref, ref_grad = value_and_grad(lambda x, t, T: reference_logprobs(x, t, T)[0],
                                   logits, targets, upstream, T)
    assert got.dtype == torch.float32 and got.shape == (8,)
    assert got_grad.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad.double(), ref_grad.double(), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs_match_float64_reference_of_the_same_bf16_values(backend):
    logits, targets, upstream = make_inputs(6, ODD_VOCAB, torch.bfloat16, seed=1)
    T = 1.3
    got, got_grad = value_and_grad(lambda x, t, T: kernels.token_logprobs(x, t, T, backend=backend),
                                   logits, targets, upstream, T)
    ref, ref_grad = value_and_grad(lambda x, t, T: reference_logprobs(x, t, T)[0],
                                   logits.double(), targets, upstream, T)
    assert got.dtype == torch.float32 and got_grad.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)  # fp32 math on bf16 values
    torch.testing.assert_close(got_grad.double(), ref_grad, atol=1e-3, rtol=2e-2)  # grad rounded to bf16


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_rows_give_zero_logprob_zero_entropy_and_zero_grad(backend):
    logits, targets, upstream = make_inputs(7, ODD_VOCAB, torch.float32, ignore=(0, 3, 6))
    x = logits.clone().requires_grad_()
    logprob, entropy = kernels.token_logprobs(x, targets, 0.9, backend=backend, return_entropy=True)
    (logprob * upstream).sum().backward()
    ignored = targets == kernels.IGNORE_INDEX
    assert torch.all(logprob[ignored] == 0) and torch.all(entropy[ignored] == 0)
    assert torch.all(x.grad[ignored] == 0)
    assert torch.all(logprob[~ignored] < 0) and torch.all(x.grad[~ignored].abs().sum(-1) > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_entropy_matches_float64_reference_and_carries_no_grad(backend):
    logits, targets, _ = make_inputs(5, ODD_VOCAB, torch.float32, seed=2)
    x = logits.clone().requires_grad_()
    logprob, entropy = kernels.token_logprobs(x, targets, 0.5, backend=backend, return_entropy=True)
    ref_logprob, ref_entropy = reference_logprobs(logits, targets, 0.5)
    torch.testing.assert_close(entropy.double(), ref_entropy, atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(logprob.double(), ref_logprob, atol=2e-5, rtol=1e-5)
    assert logprob.requires_grad and not entropy.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_logits_and_int32_targets_are_accepted(backend):
    logits, targets, upstream = make_inputs(4, 300, torch.float16, seed=3)
    got, got_grad = value_and_grad(lambda x, t, T: kernels.token_logprobs(x, t.int(), T, backend=backend),
                                   logits, targets, upstream, 1.0)
    ref, ref_grad = value_and_grad(lambda x, t, T: reference_logprobs(x, t, T)[0],
                                   logits.double(), targets, upstream, 1.0)
    assert got_grad.dtype == torch.float16
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_grad.double(), ref_grad, atol=1e-3, rtol=1e-2)


def test_torch_backend_saves_no_float32_copy_of_the_logits():
    logits, targets, upstream = make_inputs(9, ODD_VOCAB, torch.bfloat16)
    x = logits.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        kernels.token_logprobs(x, targets, 0.8, backend="torch")
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].dtype == torch.bfloat16  # only the input logits themselves

# -----------------------------------------------------------------------------
# fused_linear_token_logprobs


def fused_inputs(N, H, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen).to(dtype)
    weight = (torch.randn(V, H, generator=gen) / H**0.5 * 3).to(dtype)
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[2] = kernels.IGNORE_INDEX
    upstream = torch.randn(N, generator=gen)
    return hidden, weight, targets, upstream


def fused_value_and_grads(fn, hidden, weight, targets, upstream):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = fn(h, w)
    grad_h, grad_w = torch.autograd.grad((out.double() * upstream.double()).sum(), (h, w))
    return out.detach(), grad_h, grad_w


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_linear_matches_float64_reference_values_and_both_grads(backend):
    hidden, weight, targets, upstream = fused_inputs(10, 16, ODD_VOCAB, torch.float32)
    T = 0.6
    got = fused_value_and_grads(
        lambda h, w: kernels.fused_linear_token_logprobs(h, w, targets, T, backend=backend, chunk_size=3),
        hidden, weight, targets, upstream)
    ref = fused_value_and_grads(
        lambda h, w: reference_logprobs(h @ w.T, targets, T)[0],
        hidden.double(), weight.double(), targets, upstream)
    torch.testing.assert_close(got[0].double(), ref[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[1].double(), ref[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[2].double(), ref[2], atol=1e-5, rtol=1e-4)
    assert torch.all(got[1][2] == 0)  # the ignored token's hidden state gets no gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_linear_bf16_matches_reference_and_entropy(backend):
    hidden, weight, targets, upstream = fused_inputs(7, 32, ODD_VOCAB, torch.bfloat16, seed=4)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logprob, entropy = kernels.fused_linear_token_logprobs(h, w, targets, 1.0, backend=backend,
                                                           return_entropy=True, chunk_size=4)
    (logprob * upstream).sum().backward()
    # reference on the bf16 logits the chunked matmul produces, upcast to float64
    hr, wr = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref_logprob, ref_entropy = reference_logprobs(hr @ wr.T, targets, 1.0)
    (ref_logprob * upstream.double()).sum().backward()
    assert h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logprob.double(), ref_logprob.detach(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(entropy.double(), ref_entropy.detach(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(h.grad.float(), hr.grad.float(), atol=2e-2, rtol=3e-2)
    torch.testing.assert_close(w.grad.float(), wr.grad.float(), atol=2e-2, rtol=3e-2)


def test_fused_linear_saves_nothing_vocab_sized_per_token():
    hidden, weight, targets, _ = fused_inputs(12, 8, ODD_VOCAB, torch.float32)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        kernels.fused_linear_token_logprobs(h, w, targets, backend="torch", chunk_size=5)
    assert all(t.numel() <= w.numel() for t in saved)
    assert not any(t.shape == (12, ODD_VOCAB) for t in saved)


def test_fused_linear_grad_only_for_hidden_when_weight_is_frozen():
    hidden, weight, targets, upstream = fused_inputs(6, 8, 50, torch.float32)
    h = hidden.clone().requires_grad_()
    out = kernels.fused_linear_token_logprobs(h, weight, targets, backend="torch", chunk_size=4)
    (out * upstream).sum().backward()
    hr = hidden.clone().requires_grad_()
    (reference_logprobs(hr @ weight.T, targets, 1.0)[0].float() * upstream).sum().backward()
    torch.testing.assert_close(h.grad, hr.grad, atol=1e-5, rtol=1e-4)
    assert weight.grad is None

class MatmulDtypes(TorchDispatchMode):
    """Records the input dtypes of every matmul that runs while it is active."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in ("mm", "addmm", "addmm_", "matmul", "bmm"):
            self.seen.append(tuple(a.dtype for a in args if torch.is_tensor(a)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_linear_under_bf16_autocast_backward_runs_in_bf16_and_matches_float64(backend):
    # fp32 master weights under bf16 autocast: the forward's logits are bf16 matmuls, and the
    # backward must recompute those same logits (bf16, tensor cores) rather than fp32 ones,
    # whose softmax would not sum to 1 against the bf16 forward's logsumexp
    hidden, weight, targets, upstream = fused_inputs(40, 32, ODD_VOCAB, torch.float32, seed=5)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logprob = kernels.fused_linear_token_logprobs(h, w, targets, 0.8, backend=backend, chunk_size=7)
    matmuls = MatmulDtypes()
    with matmuls:
        (logprob * upstream).sum().backward()
    assert len(matmuls.seen) == 3 * 6 and all(d == (torch.bfloat16, torch.bfloat16) for d in matmuls.seen)
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    # float64 reference on the bf16 logits the forward computed:
    # d/dz = g (onehot - softmax(z / T)) / T, then d/dh = dz @ W, d/dW = dz^T @ h
    hb, wb = hidden.bfloat16(), weight.bfloat16()
    z = (hb @ wb.T).double() / 0.8
    log_p = torch.log_softmax(z, -1)
    valid = targets != kernels.IGNORE_INDEX
    torch.testing.assert_close(logprob.double(), log_p.gather(1, targets.clamp(min=0)[:, None])[:, 0] * valid,
                               atol=1e-5, rtol=1e-5)
    dz = -log_p.exp() * (upstream.double() * valid)[:, None]
    dz[valid.nonzero()[:, 0], targets[valid]] += upstream.double()[valid]
    dz /= 0.8
    for got, ref in ((h.grad, dz @ wb.double()), (w.grad, dz.T @ hb.double())):
        rel = ((got.double() - ref).norm() / ref.norm()).item()
        assert rel < 5e-3, rel  # bf16 rounding of d logits and of each product (2^-9 ~ 2e-3); fp32 recompute: 1e-2


def test_fused_linear_compute_dtype_float32_under_autocast_equals_plain_fp32():
    hidden, weight, targets, upstream = fused_inputs(9, 16, 300, torch.float32, seed=6)
    plain = fused_value_and_grads(
        lambda h, w: kernels.fused_linear_token_logprobs(h, w, targets, backend="torch", chunk_size=4),
        hidden, weight, targets, upstream)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        forced = fused_value_and_grads(
            lambda h, w: kernels.fused_linear_token_logprobs(h, w, targets, backend="torch", chunk_size=4,
                                                             compute_dtype=torch.float32),
            hidden, weight, targets, upstream)
    for a, b in zip(plain, forced):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert kernels.fused_compute_dtype(hidden) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.fused_compute_dtype(hidden) == torch.bfloat16
        assert kernels.fused_compute_dtype(hidden.half()) == torch.float16  # only fp32 inputs are autocast

# -----------------------------------------------------------------------------
# errors and imports


def test_bad_inputs_raise_errors_that_name_the_problem():
    logits, targets, _ = make_inputs(4, 10, torch.float32)
    with pytest.raises(ValueError, match=r"targets\[0\] = 10"):
        kernels.token_logprobs(logits, torch.tensor([10, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"targets\[1\] = -5"):
        kernels.token_logprobs(logits, torch.tensor([0, -5, 2, 3]))
    with pytest.raises(ValueError, match="temperature"):
        kernels.token_logprobs(logits, targets, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        kernels.token_logprobs(logits, targets, backend="cuda")
    with pytest.raises(ValueError, match=r"shape \[4\]"):
        kernels.token_logprobs(logits, targets[:3])
    with pytest.raises(ValueError, match="weight"):
        kernels.fused_linear_token_logprobs(logits, torch.zeros(10, 3), targets)


def test_kernels_import_without_triton_and_triton_backend_raises_clearly():
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import torch, kernels\n"
        "x = torch.randn(2, 5); t = torch.tensor([1, 4])\n"
        "assert kernels.token_logprobs(x, t).shape == (2,)\n"
        "try:\n"
        "    kernels.token_logprobs(x, t, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'triton is not installed' in str(e); print('OK')\n"
    )
    repo = os.path.join(os.path.dirname(__file__), "..")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "OK", result.stderr
