"""
Tests for sampler.py: greedy decoding against a cache-free reference and against
transformers, top-k / top-p filtering on hand-made logits, seeds, first-token diversity,
stop tokens and lengths, and the returned log-probs against a full forward.

    python -m pytest tests/test_sampler.py -q
"""
import math

import pytest
import torch

from model import Qwen3, Qwen3Config
from sampler import (attend_bmm, attend_elementwise, attention_bias, filter_logits, fuse_decode_weights,
                     fused_decode_step, generate, sample_from_logits)

VOCAB = 96  # tiny vocabulary: full-vocab reference loops stay cheap


def tiny_model(std=0.5, seed=0, vocab=VOCAB):
    # std 0.5 on matrices: logits spread over several units, so greedy argmaxes are not near-ties
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      initializer_range=std, torch_dtype='float32', bos_token_id=None, eos_token_id=None,
                      pad_token_id=0, tie_word_embeddings=False)
    return Qwen3(cfg).init_weights(seed).eval()


def ragged_prompts(seed=0, lengths=(3, 11, 1, 7)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


@torch.no_grad()
def greedy_reference(model, prompt, max_new_tokens, stop_token_ids=()):
    """Cache-free greedy decoding on the model's device: a full forward over the whole sequence at every step."""
    device = model.model.embed_tokens.weight.device
    seq, out = list(prompt), []
    for _ in range(max_new_tokens):
        tok = int(model(torch.tensor([seq], device=device))[0, -1].argmax())
        out.append(tok)
        seq.append(tok)
        if tok in stop_token_ids:
            break
    return out


def reference_filter(logits_row, top_k, top_p):
    """Straightforward per-row filtering in float64 python: the set of kept token ids."""
    vals = logits_row.double().tolist()
    order = sorted(range(len(vals)), key=lambda i: -vals[i])
    if top_k > 0:
        kth = vals[order[min(top_k, len(vals)) - 1]]
        order = [i for i in order if vals[i] >= kth]
    m = max(vals[i] for i in order)
    z = sum(math.exp(vals[i] - m) for i in order)
    kept, mass = [], 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.append(i)
        mass += math.exp(vals[i] - m) / z
    return set(kept)


# -----------------------------------------------------------------------------
# greedy correctness


def test_greedy_ragged_batch_matches_cache_free_reference_with_stops_and_compaction():
    model = tiny_model()
    prompts = ragged_prompts()
    free = [greedy_reference(model, p, 20) for p in prompts]
    # stop tokens taken from the shortest prompt's continuation (its rows sit first in the batch):
    # free[2][3] ends rows at steps 4, 11, 16 and never, so compaction drops rows from the middle
    # of the live batch; free[2][0] ends a prompt's rows at their very first token
    for stop in (free[2][3], free[2][0]):
        want = [greedy_reference(model, p, 20, (stop,)) for p in prompts]
        assert len({len(w) for w in want}) > 1, 'test setup: rows should finish at different steps'
        got = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=(stop,))
        assert [r['prompt_index'] for r in got] == [0, 0, 1, 1, 2, 2, 3, 3]
        for i, r in enumerate(got):
            assert r['tokens'] == want[i // 2]
            assert r['finish_reason'] == ('stop' if want[i // 2][-1] == stop else 'length')


@pytest.mark.parametrize('attend', [attend_bmm, attend_elementwise])
@torch.no_grad()
def test_fused_decode_step_equals_model_forward_at_ragged_positions(attend):
    # the CPU decode step (fused weights, folded norms and RoPE, hand-written T=1 attention:
    # the eager bmm one and the one generate(compile=True) hands to inductor), against
    # model.py's cached forward: same logits, same keys/values written at each row's slot
    model = tiny_model(seed=3)
    B, S, used = 5, 24, 17
    g = torch.Generator().manual_seed(3)
    cache = [(torch.randn(B, 2, S, 16, generator=g), torch.randn(B, 2, S, 16, generator=g)) for _ in range(2)]
    ref_cache = [(k.clone(), v.clone()) for k, v in cache]
    tokens = torch.randint(0, VOCAB, (B,), generator=g)
    pos = torch.tensor([0, 3, 16, 9, 12])
    want = model(tokens[:, None], kv_cache=[(k[:, :, :used], v[:, :, :used]) for k, v in ref_cache], input_pos=pos)[:, -1]
    got = fused_decode_step(fuse_decode_weights(model), tokens, cache, pos, attention_bias(pos, used), attend)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    for (k, v), (rk, rv) in zip(cache, ref_cache):
        assert torch.allclose(k, rk, atol=1e-5) and torch.allclose(v, rv, atol=1e-5)


def test_compiled_decode_matches_cache_free_reference_while_the_batch_shrinks():
    # generate(compile=True) on CPU: the fused step through torch.compile with batch size,
    # cache length and attended length dynamic. Rows stop at different steps, so compaction
    # shrinks the batch (8 -> 6 -> 4 -> 2 rows, never 1: prompt 3 never stops) and the
    # attended length grows every step: all through one graph (a recompile would only cost
    # time, so this checks the tokens and log-probs, not the graph count)
    model = tiny_model()
    prompts = ragged_prompts()
    stop = greedy_reference(model, prompts[2], 20)[3]
    want = [greedy_reference(model, p, 20, (stop,)) for p in prompts]
    got = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=(stop,), compile=True)
    eager = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=(stop,))
    assert [r['tokens'] for r in got] == [want[i // 2] for i in range(8)]
    for a, b in zip(got, eager):
        assert a['logprobs'] == pytest.approx(b['logprobs'], abs=1e-4)


@pytest.mark.parametrize('compile', [False, True])
def test_static_shape_loop_matches_cache_free_reference_with_stops(compile):
    # CUDA's decode loop (static_shapes=True; on CUDA also the graph capture) run on CPU: the
    # batch never shrinks, finished rows stay in it with their input frozen, every step
    # attends over the whole cache through model.py's forward (compile=True: that forward
    # through torch.compile with static shapes). Rows stop at different steps, one prompt's
    # rows at their first token; tokens must equal cache-free decoding and log-probs the
    # dynamic loop's. The third stop set adds the token that follows the first stop: a
    # stopped row, replaying its frozen input, predicts a stop token at every later step,
    # which must not count as a second stop
    model = tiny_model()
    prompts = ragged_prompts()
    free = [greedy_reference(model, p, 20) for p in prompts]
    assert free[2][4] != free[2][3], 'test setup: the two stop tokens should differ'
    for stops in ((free[2][3],), (free[2][0],), (free[2][3], free[2][4])):
        want = [greedy_reference(model, p, 20, stops) for p in prompts]
        got = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=stops,
                       static_shapes=True, compile=compile)
        dynamic = generate(model, prompts, n=2, max_new_tokens=20, temperature=0, stop_token_ids=stops)
        assert [r['tokens'] for r in got] == [want[i // 2] for i in range(8)]
        assert [r['finish_reason'] for r in got] == [r['finish_reason'] for r in dynamic]
        for a, b in zip(got, dynamic):
            assert a['logprobs'] == pytest.approx(b['logprobs'], abs=1e-4)
        if compile:
            break  # one compiled run is enough: the graph is the same for both stop tokens


def test_static_shape_loop_samples_the_same_stream_as_the_dynamic_one():
    # without stop tokens neither loop drops a row, so both draw one uniform per row per step
    # from the same generator: the same seed gives the same samples through either loop (a
    # check of the static loop's bookkeeping under temperature and top-p)
    model = tiny_model(seed=2)
    prompts = ragged_prompts(seed=2)
    kw = dict(n=3, max_new_tokens=16, temperature=0.7, top_p=0.9, seed=5)
    static = generate(model, prompts, static_shapes=True, **kw)
    dynamic = generate(model, prompts, **kw)
    assert [r['tokens'] for r in static] == [r['tokens'] for r in dynamic]
    assert len({tuple(r['tokens']) for r in static}) > len(prompts)  # the samples differ from each other
    for a, b in zip(static, dynamic):
        assert a['logprobs'] == pytest.approx(b['logprobs'], abs=1e-4)


def test_greedy_same_with_batch_size_cap():
    model = tiny_model(seed=1)
    prompts = ragged_prompts(seed=1, lengths=(5, 2, 9, 4, 6))
    full = generate(model, prompts, n=2, max_new_tokens=12, temperature=0)
    capped = generate(model, prompts, n=2, max_new_tokens=12, temperature=0, batch_size=3)
    assert [r['tokens'] for r in full] == [r['tokens'] for r in capped]
    assert [r['prompt_index'] for r in capped] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    for a, b in zip(full, capped):
        assert a['logprobs'] == pytest.approx(b['logprobs'], abs=1e-4)


def test_greedy_matches_transformers_generate(tmp_path):
    import transformers
    model = tiny_model(seed=2)
    model.save_pretrained(tmp_path)
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    prompts = ragged_prompts(seed=2, lengths=(4, 9, 2))
    got = generate(model, prompts, max_new_tokens=16, temperature=0)
    for p, r in zip(prompts, got):
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
        assert r['tokens'] == out[0, len(p):].tolist()


# -----------------------------------------------------------------------------
# filtering and sampling helpers


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, -2.0, 4.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    out = filter_logits(logits, top_k=2, top_p=1.0)
    kept = [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in out]
    assert kept == [{1, 4}, {3, 4}]
    assert torch.equal(out[torch.isfinite(out)], logits[torch.isfinite(out)])  # kept values unchanged


def test_top_p_keeps_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.9, 0.03, 0.02]])
    logits = probs.log()
    kept = lambda out: [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in out]
    assert kept(filter_logits(logits, top_p=0.7)) == [{0, 1}, {1}]  # 0.5 < 0.7 <= 0.8
    assert kept(filter_logits(logits, top_p=0.85)) == [{0, 1, 2}, {1}]
    assert kept(filter_logits(logits, top_p=0.97)) == [{0, 1, 2, 3}, {1, 0, 2}]  # 0.95 < 0.97
    assert kept(filter_logits(logits, top_p=0.01)) == [{0}, {1}]  # the top token always stays


def test_top_p_keeps_every_token_tied_with_the_last_kept_one():
    # the kept set is every token at least as likely as the prefix's last one: with 0.3 tied,
    # the prefix {0.4, 0.3} reaches 0.5, and the other 0.3 stays too (no arbitrary tie break)
    logits = torch.tensor([[0.4, 0.3, 0.3, 0.0], [0.3, 0.4, 0.2, 0.1]]).clamp(min=1e-9).log()
    out = filter_logits(logits, top_p=0.5)
    assert [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in out] == [{0, 1, 2}, {0, 1}]


def test_filter_matches_python_reference_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 50, generator=g) * 2
    for top_k, top_p in [(0, 0.9), (10, 1.0), (10, 0.5), (3, 0.99), (0, 0.3)]:
        out = filter_logits(logits, top_k, top_p)
        for row_in, row_out in zip(logits, out):
            assert set(torch.isfinite(row_out).nonzero().flatten().tolist()) == reference_filter(row_in, top_k, top_p)


def test_sampling_frequencies_follow_filtered_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_from_logits(logits, temperature=0.8, top_p=0.9, top_k=4, generator=g)
    z = filter_logits(logits[:1] / 0.8, 4, 0.9)[0]
    p = torch.softmax(z, -1)
    freq = torch.bincount(tokens, minlength=6).float() / tokens.numel()
    assert (freq - p).abs().max() < 0.015  # ~4 sigma at n = 20000
    assert freq[p == 0].sum() == 0  # filtered tokens are never drawn
    assert torch.allclose(logprobs, torch.log_softmax(z, -1)[tokens], atol=1e-5)


def test_greedy_logprob_is_raw_log_softmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, -1.0, 0.5]])
    tokens, logprobs = sample_from_logits(logits, temperature=0)
    assert tokens.tolist() == [1, 0]
    assert torch.allclose(logprobs, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


# -----------------------------------------------------------------------------
# sampling behaviour of generate


def test_same_seed_same_outputs_and_other_seed_differs():
    model = tiny_model(std=0.1)
    prompts = ragged_prompts(seed=3)
    kw = dict(n=3, max_new_tokens=10, temperature=1.0, top_p=0.95, top_k=40)
    a = generate(model, prompts, seed=123, **kw)
    b = generate(model, prompts, seed=123, **kw)
    c = generate(model, prompts, seed=124, **kw)
    assert a == b
    assert [r['tokens'] for r in a] != [r['tokens'] for r in c]


def test_n_samples_draw_their_own_first_token():
    model = tiny_model(std=0.02)  # near-uniform first-token distribution
    got = generate(model, [[1, 2, 3]], n=16, max_new_tokens=1, temperature=1.0, seed=0)
    first = [r['tokens'][0] for r in got]
    assert len(got) == 16 and all(r['prompt_index'] == 0 for r in got)
    assert len(set(first)) > 4  # 16 draws from ~uniform over 96 tokens: expect ~15 distinct


def test_stop_token_included_and_nothing_after_and_length_finish():
    model = tiny_model(seed=4)
    prompts = ragged_prompts(seed=4, lengths=(6, 3))
    free = generate(model, prompts, max_new_tokens=15, temperature=0)
    stop = free[0]['tokens'][5]
    k = free[0]['tokens'].index(stop)
    got = generate(model, prompts, max_new_tokens=15, temperature=0, stop_token_ids=[stop])
    assert got[0]['finish_reason'] == 'stop'
    assert got[0]['tokens'] == free[0]['tokens'][:k + 1]
    assert len(got[0]['logprobs']) == k + 1
    if stop not in free[1]['tokens']:
        assert got[1]['finish_reason'] == 'length' and len(got[1]['tokens']) == 15
    # sampled rows: whatever they draw, a row ends at its first stop token or at the length cap
    stops = list(range(0, VOCAB, 7))
    sampled = generate(tiny_model(std=0.05), prompts, n=8, max_new_tokens=9, temperature=1.0,
                       stop_token_ids=stops, seed=0)
    for r in sampled:
        hits = [i for i, t in enumerate(r['tokens']) if t in stops]
        if r['finish_reason'] == 'stop':
            assert hits == [len(r['tokens']) - 1]
        else:
            assert hits == [] and len(r['tokens']) == 9
        assert len(r['logprobs']) == len(r['tokens'])
    assert {r['finish_reason'] for r in sampled} == {'stop', 'length'}


@torch.no_grad()
def test_logprobs_equal_filtered_log_softmax_of_full_forward():
    model = tiny_model(std=0.3, seed=5)
    prompts = ragged_prompts(seed=5, lengths=(4, 8, 2))
    T, top_k, top_p = 0.7, 30, 0.9
    got = generate(model, prompts, n=2, max_new_tokens=10, temperature=T, top_k=top_k, top_p=top_p, seed=7,
                   stop_token_ids=[3])
    for r in got:
        p = prompts[r['prompt_index']]
        logits = model(torch.tensor([p + r['tokens']]))[0, len(p) - 1:-1].double() / T  # [n_new, V]
        for i, tok in enumerate(r['tokens']):
            kept = reference_filter(logits[i], top_k, top_p)
            assert tok in kept
            ids = torch.tensor(sorted(kept))
            want = logits[i, tok] - torch.logsumexp(logits[i, ids], 0)
            assert r['logprobs'][i] == pytest.approx(float(want), abs=2e-4)


def test_greedy_logprobs_are_raw_log_softmax_of_full_forward():
    model = tiny_model(seed=6)
    prompts = ragged_prompts(seed=6, lengths=(5, 2))
    got = generate(model, prompts, max_new_tokens=8, temperature=0)
    for r in got:
        p = prompts[r['prompt_index']]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([p + r['tokens']]))[0, len(p) - 1:-1], -1)
        want = lp[torch.arange(len(r['tokens'])), torch.tensor(r['tokens'])]
        assert r['logprobs'] == pytest.approx(want.tolist(), abs=1e-4)


# -----------------------------------------------------------------------------
# edge cases and bad input


def test_max_new_tokens_edge_cases():
    model = tiny_model()
    assert generate(model, [[1, 2]], n=2, max_new_tokens=0) == [
        {'prompt_index': 0, 'tokens': [], 'logprobs': [], 'finish_reason': 'length'}] * 2
    one = generate(model, [[1, 2], [3]], max_new_tokens=1, temperature=0)
    assert [len(r['tokens']) for r in one] == [1, 1] and {r['finish_reason'] for r in one} == {'length'}


def test_bad_input_raises_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r'prompts\[1\] is empty'):
        generate(model, [[1], []])
    with pytest.raises(ValueError, match=r'prompts\[0\] has token id 96'):
        generate(model, [[1, VOCAB]])
    with pytest.raises(ValueError, match='top_p'):
        generate(model, [[1]], top_p=0.0)
    with pytest.raises(ValueError, match='max_position_embeddings'):
        generate(model, [[1]], max_new_tokens=600)
    with pytest.raises(ValueError, match='stop token id'):
        generate(model, [[1]], stop_token_ids=[-1])
    with pytest.raises(ValueError, match='static_shapes=False contradicts'):
        generate(model, [[1]], cuda_graph=True, static_shapes=False)
