"""
The sampler's KV cache and host syncs (issue 12, findings 8 and 12): one cache per decode
batch, prefilled and fanned out in place (no copy at one sample per prompt, whatever the
length order); compaction moves nothing when only the last rows finished; the eager decode
reads the done flags every host_sync_every(device) steps.

    python -m pytest tests/test_sampler_memory.py -q
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sampler
from sampler import generate
from test_sampler import greedy_reference, ragged_prompts, tiny_model


def record_caches(monkeypatch, model):
    """Every cache make_kv_cache allocates; the fan-out's sources and the cache _decode_eager
    decodes with, in call order."""
    made, decoded = [], []
    make = model.make_kv_cache

    def make_and_record(*args, **kw):
        made.append(make(*args, **kw))
        return made[-1]

    decode = sampler._decode_eager

    def decode_and_record(model_, cache, *args, **kw):
        decoded.append([(k.data_ptr(), v.data_ptr(), k.shape[0]) for k, v in cache])
        return decode(model_, cache, *args, **kw)

    fan_out = sampler._fan_out

    def fan_out_and_record(cache, src, prompt_len):
        decoded.append(('fan-out sources', src.tolist()))
        return fan_out(cache, src, prompt_len)

    monkeypatch.setattr(model, 'make_kv_cache', make_and_record)
    monkeypatch.setattr(sampler, '_decode_eager', decode_and_record)
    monkeypatch.setattr(sampler, '_fan_out', fan_out_and_record)
    return made, decoded


def test_one_sample_per_prompt_decodes_in_the_prefilled_cache_without_a_copy(monkeypatch):
    model = tiny_model()
    prompts = ragged_prompts(lengths=(9, 2, 5, 7))  # not in length order: the rows get reordered
    made, decoded = record_caches(monkeypatch, model)
    got = generate(model, prompts, n=1, max_new_tokens=6, temperature=0)
    assert len(made) == 1 and len(decoded) == 2
    assert decoded[0] == ('fan-out sources', [0, 1, 2, 3])  # prefill rows in decode order: nothing to move
    assert decoded[1] == [(k.data_ptr(), v.data_ptr(), 4) for k, v in made[0]]  # the same buffers, 4 rows
    for p, r in zip(prompts, got):
        assert r['tokens'] == greedy_reference(model, p, 6)


def test_fan_out_fills_the_sample_rows_of_the_one_cache_in_place(monkeypatch):
    model = tiny_model()
    prompts = ragged_prompts(lengths=(6, 3, 8))
    made, decoded = record_caches(monkeypatch, model)
    got = generate(model, prompts, n=3, max_new_tokens=5, temperature=0)
    assert len(made) == 1 and made[0][0][0].shape[0] == 9  # rows = prompts x samples, no prompt-only cache
    assert decoded[0] == ('fan-out sources', [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert decoded[1] == [(k.data_ptr(), v.data_ptr(), 9) for k, v in made[0]]
    for i, r in enumerate(got):  # every sample row saw its own prompt's keys/values
        assert r['prompt_index'] == i // 3 and r['tokens'] == greedy_reference(model, prompts[i // 3], 5)


def test_fan_out_is_a_no_op_for_arange_and_a_row_gather_otherwise():
    k = torch.arange(4 * 2 * 5 * 3, dtype=torch.float32).view(4, 2, 5, 3)
    cache = [(k.clone(), k.clone() + 1)]
    ptrs = [(a.data_ptr(), b.data_ptr()) for a, b in cache]
    sampler._fan_out(cache, torch.arange(4), 5)
    assert torch.equal(cache[0][0], k) and [(a.data_ptr(), b.data_ptr()) for a, b in cache] == ptrs
    sampler._fan_out(cache, torch.tensor([0, 0, 1, 1]), 2)
    assert torch.equal(cache[0][0][:, :, :2], k[[0, 0, 1, 1], :, :2])  # prompt slots copied from rows 0, 1
    assert torch.equal(cache[0][0][:, :, 2:], k[:, :, 2:])  # the decode slots untouched
    assert torch.equal(cache[0][1][:, :, :2], k[[0, 0, 1, 1], :, :2] + 1)


def count_host_reads(monkeypatch):
    """Counts int()/bool()/.item() of tensors: each a host-device sync on CUDA (a dispatch mode
    would not see them: generate runs under inference_mode, which skips Python dispatch)."""
    reads = [0]
    for name in ('__int__', '__bool__', 'item'):
        method = getattr(torch.Tensor, name)

        def counted(t, *a, _method=method):
            reads[0] += 1
            return _method(t, *a)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_eager_decode_reads_the_done_flags_every_host_sync_every_steps(monkeypatch):
    assert sampler.host_sync_every(torch.device('cpu')) == 1
    assert sampler.host_sync_every(torch.device('cuda')) == sampler.GRAPH_SYNC_EVERY > 1
    model = tiny_model()
    prompts = ragged_prompts(lengths=(3, 5))
    kw = dict(n=2, max_new_tokens=64, temperature=0, stop_token_ids=(STOP,))
    reads, outs = {}, {}
    for every in (1, 16):  # 16 is what a CUDA device gets; the CPU run shows the cadence
        monkeypatch.setattr(sampler, 'host_sync_every', lambda device, every=every: every)
        with monkeypatch.context() as patch:
            counter = count_host_reads(patch)
            outs[every] = generate(model, prompts, **kw)
        reads[every] = counter[0]
    # the cadence changes when the host looks (and compacts), not what is generated
    assert [(o['tokens'], o['finish_reason']) for o in outs[1]] == [(o['tokens'], o['finish_reason']) for o in outs[16]]
    assert any(o['finish_reason'] == 'stop' for o in outs[1])
    steps = max(len(o['tokens']) for o in outs[1]) - 1  # decode steps until every row stopped
    assert reads[1] >= steps  # one read a step
    # a read every 16 steps; what else reads (setup, compaction, _finish) is the same or fewer
    assert reads[16] <= reads[1] - steps + steps // 16 + 4


STOP = 95  # a stop id some rows hit

class CountGathers(TorchDispatchMode):
    """Counts row gathers (aten.index) of 4-D tensors: what a cache reorder dispatches to."""

    def __init__(self):
        super().__init__()
        self.gathers = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.index.Tensor and args[0].dim() == 4:
            self.gathers += 1
        return func(*args, **(kwargs or {}))


def test_compaction_moves_no_row_when_only_the_last_rows_finished():
    base = torch.randn(5, 2, 7, 3)
    cache = [(base.clone(), base.clone() + 1), (base.clone() + 2, base.clone() + 3)]
    with CountGathers() as counter:
        kept = sampler._keep_rows(cache, torch.arange(3), used=4)
    assert counter.gathers == 0
    assert [k.data_ptr() for k, _ in kept] == [k.data_ptr() for k, _ in cache] and kept[0][0].shape[0] == 3
    assert torch.equal(kept[1][1], base[:3] + 3)
    with CountGathers() as counter:
        kept = sampler._keep_rows(cache, torch.tensor([0, 2, 4]), used=4)
    assert counter.gathers == 4  # k and v of both layers
    assert torch.equal(kept[0][0][:, :, :4], base[[0, 2, 4], :, :4])  # the slots in use moved
    assert torch.equal(kept[0][0][1:, :, 4:], base[1:3, :, 4:])  # the unused slots did not
