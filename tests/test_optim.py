"""optim.py, the one definition of what the training scripts' optimizer steps share: the LR
schedule (SFT's warmup + cosine, the compressor's warmup + linear decay, CHRPO's warmup +
constant), AdamW's decay groups, and the autocast dtype a config names.

    python -m pytest tests/test_optim.py -q
"""
import math

import pytest
import torch

import optim
from model import Qwen3, Qwen3Config


def test_lr_schedule_warmup_then_cosine_to_floor():
    # train_sft: ceil(warmup_frac * max_iters) = 10 warmup steps of 100, floor 0.1 * peak
    lrs = [optim.lr_at(s, 1.0, math.ceil(0.1 * 100), 100, 'cosine', 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # 10 warmup steps
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    mid = 10 + 45  # halfway through the cosine: (peak + floor) / 2
    assert lrs[mid] == pytest.approx(0.55, abs=1e-9)


def test_linear_schedule_is_the_compressors_warmup_then_decay_to_zero():
    peak, n, warmup = 2e-3, 150, max(1, round(0.06 * 150))  # train_compressor: 9 warmup steps
    lrs = [optim.lr_at(s, peak, warmup, n, 'linear') for s in range(n + 2)]
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup] == peak  # the top of the ramp, then straight down
    # (n - s) / (n - warmup) of the peak, exactly the compressor's old formula, 0 at and past the end
    assert lrs[warmup:n] == [peak * ((n - s) / (n - warmup)) for s in range(warmup, n)]
    assert lrs[n] == lrs[n + 1] == 0.0


def test_constant_schedule_is_chrpos_warmup_then_flat():
    lrs = [optim.lr_at(s, 1e-6, 10, 500, 'constant') for s in range(40)]
    assert lrs[0] == pytest.approx(1e-7) and lrs[9] == pytest.approx(1e-6)
    assert all(lr == 1e-6 for lr in lrs[10:])
    assert optim.lr_at(0, 3e-4, 0, 25, 'constant') == 3e-4  # warmup_iters = 0: the peak from the start
    with pytest.raises(ValueError, match="decay must be"):
        optim.lr_at(20, 1.0, 10, 100, 'cosin')


def test_adamw_decays_matrices_only():
    cfg = Qwen3Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8, max_position_embeddings=64, rope_theta=1e4)
    model = Qwen3(cfg).init_weights(0)
    opt = optim.adamw(model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.95))
    decayed = {id(p) for p in opt.param_groups[0]['params']}
    assert opt.param_groups[0]['weight_decay'] == 0.5 and opt.param_groups[1]['weight_decay'] == 0.0
    assert {id(p) for p in model.parameters() if p.dim() >= 2} == decayed  # the tied head counted once
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decoupled decay moves a weight
    opt.step()
    for n, p in model.named_parameters():
        if p.dim() >= 2:
            torch.testing.assert_close(p, before[n] * (1 - 0.1 * 0.5), msg=n)
        else:
            assert torch.equal(p, before[n]), n  # RMSNorm gains stay at 1


def test_autocast_dtype_names():
    assert optim.autocast_dtype('auto', 'cpu') == 'float32'  # the tiny default runs fp32 on CPU
    assert optim.autocast_dtype('auto', 'cuda') == 'bfloat16'
    assert optim.autocast_dtype('bfloat16', 'cpu') == 'bfloat16'  # explicit bf16 holds on CPU too
    with pytest.raises(ValueError, match="autocast_dtype = 'bf16'"):
        optim.autocast_dtype('bf16', 'cpu')
    with optim.make_autocast('cpu', 'bfloat16'):
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
    with optim.make_autocast('cpu', 'float32'):
        assert not torch.is_autocast_enabled('cpu')


def test_sampling_copy_follows_the_master_weights_in_its_dtype():
    cfg = Qwen3Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8, max_position_embeddings=64, rope_theta=1e4)
    model = Qwen3(cfg).init_weights(0)
    assert optim.sampling_copy(model, 'float32') is model  # no copy without autocast
    separate = optim.sampling_copy(model, 'float32', separate=True)  # e.g. beside compiled training blocks
    assert separate is not model and all(p.dtype == torch.float32 and not p.requires_grad for p in separate.parameters())
    copy = optim.sampling_copy(model, 'bfloat16')
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in copy.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    optim.refresh_sampling_copy(copy, model)
    for (n, a), b in zip(copy.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b.to(torch.bfloat16)), n
    assert copy.lm_head.weight is copy.model.embed_tokens.weight  # still tied
