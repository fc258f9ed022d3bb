"""
GPU checks: the code paths that only run on CUDA (compiled Triton kernels, the CUDA-graph
decode, model.py's forward and a bf16 training step on the GPU), each against a reference.
Skipped where CUDA is missing (CI); `bash bench_gpu.sh tests` runs them on a GPU machine.

    TRITON_INTERPRET=0 python -m pytest tests/test_gpu.py -q     # on a GPU: compiled kernels
    TEST_GPU_DEVICE=cpu python -m pytest tests/test_gpu.py -q    # dry run of these tests on CPU

TRITON_INTERPRET=0 matters: conftest.py turns the Triton interpreter on unless it is set, and
interpreted kernels are not the compiled ones. With TEST_GPU_DEVICE=cpu the same assertions run
on CPU (Triton interpreted, the static decode loop without a graph): a check of the tests, not
of the GPU.
"""
import os

import pytest
import torch

import kernels
from model import Qwen3
from optim import adamw, make_autocast
from sampler import generate
from test_sampler import greedy_reference, ragged_prompts, tiny_model

DEVICE = os.environ.get('TEST_GPU_DEVICE', 'cuda')
pytestmark = pytest.mark.skipif(DEVICE == 'cuda' and not torch.cuda.is_available(), reason='needs a CUDA device')
ON_GPU = DEVICE == 'cuda'
VOCAB = 151936 if ON_GPU else 1001  # Qwen3's vocabulary on the GPU; the interpreter is slow


def reference_logprobs(logits, targets, temperature):
    """float64 log_softmax(x / T).gather() on CPU; ignored rows (-100) are 0."""
    lp = torch.log_softmax(logits.double().cpu() / temperature, dim=-1)
    t = targets.cpu()
    out = lp.gather(-1, t.clamp(min=0)[:, None]).squeeze(-1)
    return out.masked_fill(t == -100, 0.0)


def require_compiled_triton():
    """On a GPU the Triton tests must run the compiled kernels: conftest.py turns the interpreter
    on unless TRITON_INTERPRET is set, and the interpreter takes CUDA tensors too (and would pass)."""
    if ON_GPU and os.environ.get('TRITON_INTERPRET') == '1':
        pytest.fail('TRITON_INTERPRET=1: the Triton kernels would be interpreted; run this file with '
                    'TRITON_INTERPRET=0 (bash bench_gpu.sh tests)')


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_triton_logprobs_and_gradient_match_float64_reference(dtype):
    # the Triton kernels (compiled on a GPU) at the real vocabulary, forward and backward:
    # d logprob / d x = (onehot(t) - softmax(x / T)) / T, times the per-token upstream g
    require_compiled_triton()
    g = torch.Generator().manual_seed(0)
    N, T = 24, 0.7
    logits = (3 * torch.randn(N, VOCAB, generator=g)).to(dtype).to(DEVICE).requires_grad_()
    targets = torch.randint(0, VOCAB, (N,), generator=g)
    targets[[3, 11]] = -100
    upstream = torch.randn(N, generator=g)
    lp = kernels.token_logprobs(logits, targets.to(DEVICE), temperature=T, backend='triton')
    (lp * upstream.to(DEVICE)).sum().backward()
    ref_x = logits.detach().double().cpu().requires_grad_()
    ref = reference_logprobs(ref_x, targets, T)
    (ref * upstream.double()).sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 2e-3  # bf16 inputs: the math is fp32 either way
    assert torch.allclose(lp.detach().cpu().double(), ref.detach(), atol=tol, rtol=0)
    assert torch.allclose(logits.grad.cpu().double(), ref_x.grad, atol=tol, rtol=1e-2)


def test_fused_linear_logprobs_and_gradients_match_float64_reference_in_bf16():
    # the RL loss's path with a bf16 head at Qwen3's vocabulary (hidden 256: the test's size, not
    # the paper's), never holding [N, V] logits; forward and both gradients
    require_compiled_triton()
    g = torch.Generator().manual_seed(1)
    N, H, T = 40, 256, 1.0
    hidden = (torch.randn(N, H, generator=g) / 4).bfloat16().to(DEVICE).requires_grad_()
    weight = (torch.randn(VOCAB, H, generator=g) / 4).bfloat16().to(DEVICE).requires_grad_()
    targets = torch.randint(0, VOCAB, (N,), generator=g)
    upstream = torch.randn(N, generator=g)
    lp = kernels.fused_linear_token_logprobs(hidden, weight, targets.to(DEVICE), temperature=T, chunk_size=16)
    (lp * upstream.to(DEVICE)).sum().backward()
    ref_h = hidden.detach().double().cpu().requires_grad_()
    ref_w = weight.detach().double().cpu().requires_grad_()
    ref = reference_logprobs(ref_h @ ref_w.T, targets, T)
    (ref * upstream.double()).sum().backward()
    # the chunk matmuls round their logits to bf16 (|logit| ~ 4: steps of 1/32) before the fp32 softmax
    assert torch.allclose(lp.detach().cpu().double(), ref.detach(), atol=0.05, rtol=0)
    for got, want in ((hidden.grad, ref_h.grad), (weight.grad, ref_w.grad)):
        got = got.double().cpu()
        assert cosine(got, want) > 0.999
        assert (got - want).norm() < 0.03 * want.norm()


def test_model_forward_on_device_matches_cpu_in_fp32():
    model = tiny_model(seed=2)
    ids = torch.randint(0, 96, (3, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids)
        got = model.to(DEVICE)(ids.to(DEVICE)).cpu()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('compile', [False, True])
def test_cuda_graph_decode_matches_cache_free_reference(compile):
    # generate(cuda_graph=True) on the device (the graph captured once and replayed; with
    # compile=True the captured step is the compiled one) in fp32: rows stop at different
    # steps, one prompt's rows at their first token. Tokens equal cache-free decoding
    model = tiny_model().to(DEVICE)
    prompts = ragged_prompts()
    free = [greedy_reference(model, p, 20) for p in prompts]
    for stops in ((free[2][3],), (free[2][0],)):
        want = [greedy_reference(model, p, 20, stops) for p in prompts]
        got = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=stops,
                       cuda_graph=True, compile=compile, static_shapes=True)
        assert [r['tokens'] for r in got] == [want[i // 2] for i in range(8)]
        eager = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=stops)
        for a, b in zip(got, eager):
            assert a['logprobs'] == pytest.approx(b['logprobs'], abs=1e-4)


def test_bf16_training_step_tracks_the_fp32_step():
    # train_sft.py's GPU step (bf16 autocast over fp32 master weights, fused AdamW on CUDA): the
    # loss and the gradients stay close to the same step in fp32, and the step moves the weights
    base = tiny_model(seed=3, vocab=512).train()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 512, (4, 64), generator=g).to(DEVICE)
    y = torch.roll(x, -1, dims=1)
    results = {}
    for amp in ('float32', 'bfloat16'):
        model = Qwen3(base.config).to(DEVICE)
        model.load_state_dict(base.state_dict())
        opt = adamw(model, 1e-3, 0.1, (0.9, 0.95), fused=ON_GPU)
        with make_autocast(DEVICE, amp):
            loss = model(x, targets=y)
        loss.backward()
        grads = torch.cat([p.grad.flatten().double().cpu() for p in model.parameters()])
        opt.step()
        after = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
        results[amp] = (loss.item(), grads, after)
    (l32, g32, w32), (l16, g16, w16) = results['float32'], results['bfloat16']
    before = torch.cat([p.detach().flatten() for p in base.parameters()])
    assert abs(l16 - l32) < 0.02 * l32
    assert cosine(g16, g32) > 0.99
    assert (g16 - g32).norm() < 0.05 * g32.norm()
    assert torch.isfinite(w16).all() and (w16 - before).abs().max() > 0  # the fused step ran
    assert (w16 - w32).abs().max() <= 2.5e-3  # Adam's first step is ~lr * sign(g) (lr 1e-3) on both sides
