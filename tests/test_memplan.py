"""memplan.py against what really gets allocated, at reduced shapes on CPU: parameters,
gradients and AdamW state exactly; activations against the bytes autograd saves for backward
(saved_tensors_hooks; with checkpointing, the tensors a forward leaves alive); the KV cache
against model.make_kv_cache and the peak the sampler reaches. Then the check's refusal and
the CLI on the paper-scale configs."""
import gc
import os
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import memplan
from model import Qwen3, Qwen3Config
from sampler import generate
from saved_bytes import param_storages, saved_for_backward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    'gqa2_tied': dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=24, tie_word_embeddings=True),
    'gqa3_untied': dict(vocab_size=500, hidden_size=96, intermediate_size=200, num_hidden_layers=3,
                        num_attention_heads=6, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
}


def make_model(shape, num_labels=None, dtype=torch.float32):
    cfg = Qwen3Config(**SHAPES[shape], rope_theta=10000.0, max_position_embeddings=512)
    causal = None if num_labels is None else False
    return Qwen3(cfg, num_labels=num_labels, causal=causal).init_weights(seed=0).to(dtype)


class LiveStorages(TorchDispatchMode):
    """Every storage a tensor created while active lives in (those passing keep(tensor)), with
    the bytes still alive now and at the peak: each tensor's weakref finalizer releases it."""

    def __init__(self, keep=lambda t: True, ignore=()):
        super().__init__()
        self.keep, self.ignore = keep, set(ignore)
        self.refs = {}  # storage pointer -> [bytes, tensors alive]
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if torch.is_tensor(t) and self.keep(t) and t.untyped_storage().data_ptr() not in self.ignore:
                self._track(t)
        return out

    def _track(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.refs:
            self.refs[ptr] = [t.untyped_storage().nbytes(), 0]
            self.live += self.refs[ptr][0]
            self.peak = max(self.peak, self.live)
        self.refs[ptr][1] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr):
        self.refs[ptr][1] -= 1
        if self.refs[ptr][1] == 0:
            self.live -= self.refs.pop(ptr)[0]


def measure_forward(model, x, y, mask, autocast):
    """(bytes saved through saved_tensors_hooks, bytes the forward leaves alive), parameters excluded."""
    live = LiveStorages(ignore=param_storages(model))
    with saved_for_backward(model) as saved, live:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            loss = model(x, targets=y, attention_mask=mask)
    gc.collect()
    return sum(saved.values()), live.live - loss.untyped_storage().nbytes()

# -----------------------------------------------------------------------------
# parameters, gradients, optimizer: exact


@pytest.mark.parametrize('shape,num_labels', [('gqa2_tied', None), ('gqa3_untied', None), ('gqa3_untied', 2)])
def test_params_grads_and_adamw_state_bytes_are_exact(shape, num_labels):
    model = make_model(shape, num_labels)
    n = memplan.param_counts(model.config)
    assert n['total'] == sum(p.numel() for p in model.parameters())
    block = model.model.layers[0]
    assert n['block'] == sum(p.numel() for p in block.parameters())
    assert n['block_matmul'] == sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randint(0, model.config.vocab_size, (2, 9))
    y = torch.randint(0, num_labels or model.config.vocab_size, (2, 9))
    model(x, targets=y).backward()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    rows = {r['what'].split(' (')[0]: r['bytes'] for r in
            memplan.training_rows(model.config, 18, 4, 4, False, False, 1, 'batch_size')}
    assert rows['weights'] == sum(p.numel() * p.element_size() for p in model.parameters())
    assert rows['gradients'] == sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    moments = sum(t.numel() * t.element_size() for s in opt.state.values() for k, t in s.items() if k != 'step')
    assert rows['AdamW moments'] == moments

# -----------------------------------------------------------------------------
# activations: the bytes autograd keeps for backward


@pytest.mark.parametrize('shape', list(SHAPES))
@pytest.mark.parametrize('param_dtype,autocast', [(torch.float32, True), (torch.float32, False), (torch.bfloat16, False)])
@pytest.mark.parametrize('classifier', [False, True])
def test_activation_estimate_matches_saved_tensors(shape, param_dtype, autocast, classifier):
    model = make_model(shape, 2 if classifier else None, param_dtype)
    B, T = 3, 37
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, model.config.vocab_size, (B, T), generator=gen)
    y = torch.randint(0, 2 if classifier else model.config.vocab_size, (B, T), generator=gen)
    mask = None
    if classifier:  # the compressor: padded, bidirectional, k/v expanded to every head
        mask = torch.ones(B, T, dtype=torch.long)
        mask[0, 30:] = 0
    p = 4 if param_dtype == torch.float32 else 2
    c = 2 if autocast or param_dtype == torch.bfloat16 else 4
    saved, alive = measure_forward(model, x, y, mask, autocast)
    # autocast's bf16 copies of the matmul weights are saved too: a row of their own in the plan
    copies = model.config.num_hidden_layers * memplan.param_counts(model.config)['block_matmul'] * c if autocast else 0
    estimate = memplan.activation_bytes(model.config, B * T, p, c, kv_expanded=classifier) + copies
    assert abs(saved - estimate) <= 0.01 * estimate, (saved, estimate)
    assert abs(alive - saved) <= 0.01 * saved  # nothing else outlives the forward
    # checkpointed: the block inputs stay alive (held by checkpoint, not through the hooks)
    model.set_activation_checkpointing(True)
    _, alive_ckpt = measure_forward(model, x, y, mask, autocast)
    estimate_ckpt = memplan.activation_bytes(model.config, B * T, p, c, checkpointing=True, kv_expanded=classifier)
    assert abs(alive_ckpt - estimate_ckpt) <= 0.01 * estimate_ckpt, (alive_ckpt, estimate_ckpt)
    assert estimate_ckpt < estimate / 3

# -----------------------------------------------------------------------------
# KV cache: the model's buffers and the sampler's peak


def test_kv_cache_estimate_matches_model_and_sampler_allocations():
    model = make_model('gqa3_untied').eval()
    cfg = model.config
    cache = model.make_kv_cache(5, 33)
    assert memplan.kv_cache_bytes(cfg, 5, 33, 4) == sum(t.numel() * t.element_size() for kv in cache for t in kv)
    del cache
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17, 18, 19]]  # not in length order

    def is_cache(t):  # [rows, kv_heads, slots, head_dim] with every slot (prefill's k/v: the transients row)
        return (t.dim() == 4 and t.shape[1] == cfg.num_key_value_heads and t.shape[3] == cfg.head_dim
                and t.shape[2] == 6 + 24)

    for n in (4, 1):
        live = LiveStorages(keep=is_cache)
        with live:
            generate(model, prompts, n=n, max_new_tokens=24, temperature=1.0, seed=0)
        rows, length = 3 * n, 6 + 24
        estimate = memplan.kv_cache_bytes(cfg, rows, length, 4)  # one cache: prefill and fan-out in place
        assert estimate <= live.peak <= 1.05 * estimate, (n, live.peak, estimate)
        # no second cache: the fan-out copy of the prompts' rows is gone (issue 12, finding 8)
        assert live.peak < memplan.kv_cache_bytes(cfg, rows + 1, length, 4)


def test_chrpo_plan_sizes_the_sampling_rows_in_the_sampling_dtype():
    # a bf16 update beside an fp32 sampling copy: the copy's weights and KV cache at 4 bytes an
    # element, twice the bf16 copy's; the training rows do not change
    cfg = make_model('gqa3_untied').config
    plans = {sd: memplan.chrpo_plan(cfg, 4, 8, 4096, 40, 200, 1.0, 'bfloat16', 1, sample_dtype=sd)
             for sd in (None, 'float32')}
    def row(plan, start):
        return next(r['bytes'] for r in plan['rollouts'] if r['what'].startswith(start))
    assert row(plans['float32'], 'weights (sampling') == 2 * row(plans[None], 'weights (sampling')
    assert row(plans['float32'], 'weights (sampling') == memplan.param_counts(cfg)['total'] * 4
    assert row(plans['float32'], 'KV cache') == 2 * row(plans[None], 'KV cache')
    assert plans[None]['update'] == plans['float32']['update']


# -----------------------------------------------------------------------------
# the check and the CLI


def test_check_refuses_an_over_budget_plan_naming_the_config_keys():
    cfg = Qwen3Config(**memplan.KNOWN_SHAPES['Qwen3-1.7B'])
    phases = memplan.sft_plan(cfg, batch_size=2, max_len=6144, dtype='bfloat16', fsdp=False, world=8)
    printed = []
    with pytest.raises(MemoryError, match=r'sft step.*batch_size, max_len, activation_checkpointing'):
        memplan.check(phases, 60 * memplan.GiB, 'train_sft', print_fn=printed.append)
    assert 'DOES NOT FIT in 60.0 GiB' in printed[0] and 'AdamW moments' in printed[0]
    # the fixes it names do fit: checkpointing and FSDP shrink what they claim to
    smaller = memplan.sft_plan(cfg, 2, 6144, 'bfloat16', fsdp=True, world=8, activation_checkpointing=True)
    memplan.check(smaller, 60 * memplan.GiB, 'train_sft', print_fn=printed.append)
    total = {name: sum(r['bytes'] for r in rows) for name, rows in {**phases, 'small': smaller['sft step']}.items()}
    assert total['small'] < total['sft step'] / 2
    with pytest.raises(ValueError, match="dtype = 'bf16'"):
        memplan.sft_plan(cfg, 2, 6144, 'bf16', False, 1)


@pytest.mark.parametrize('config,phases', [('qwen3_1p7b_sft.py', ['sft step']),
                                           ('qwen3_1p7b_chrpo.py', ['rollouts', 'update', 'teacher labels']),
                                           ('eval_qwen3_1p7b.py', ['evaluation'])])
def test_cli_prints_the_plan_of_each_paper_config_for_1_and_8_gpus(capsys, config, phases):
    code = memplan.main([os.path.join(ROOT, 'config', config)])
    out = capsys.readouterr().out
    assert 'model Qwen3-1.7B' in out and 'on 1 GPU(s)' in out and 'on 8 GPU(s)' in out
    assert all(f'  {phase}:' in out for phase in phases)
    assert code == (1 if 'DOES NOT FIT' in out else 0)


def test_cli_plans_the_compressor_config_as_the_compressor(capsys):
    code = memplan.main([os.path.join(ROOT, 'config', 'qwen3_0p6b_compressor.py')])
    out = capsys.readouterr().out
    assert 'stage compressor, model Qwen3-0.6B' in out and '  compressor step:' in out and '  sft step:' not in out
    assert code == (1 if 'DOES NOT FIT' in out else 0)


def test_cli_overrides_and_unknown_shape(tmp_path, capsys):
    sft = os.path.join(ROOT, 'config', 'qwen3_1p7b_sft.py')
    memplan.main([sft, '--gpus=8', '--activation_checkpointing=True', '--fsdp=True'])
    out = capsys.readouterr().out
    assert 'activation checkpointing on' in out and 'FSDP shard' in out and 'on 1 GPU(s)' not in out
    odd = tmp_path / 'mystery.py'
    odd.write_text("init_from = 'someone/some-model'\nbatch_size = 1\nmax_len = 128\n")
    with pytest.raises(SystemExit, match='--shape'):
        memplan.main([str(odd)])
    memplan.main([str(odd), '--shape=Qwen/Qwen3-0.6B', '--gpus=1'])
    assert 'model Qwen3-0.6B' in capsys.readouterr().out
