"""model.py against transformers' Qwen3ForCausalLM, checkpoint I/O both ways, the KV cache,
bidirectional mode, and clear errors on broken checkpoints."""
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from model import Qwen3, Qwen3Config
from saved_bytes import saved_for_backward

# GQA ratio 2 with head_dim != hidden/heads (64/4 = 16 but head_dim 24); tied and untied;
# plus a MHA config (kv heads == heads) with head_dim == hidden/heads
CONFIGS = {
    'gqa_untied_headdim24': dict(vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=24, tie_word_embeddings=False),
    'gqa4_tied': dict(vocab_size=257, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    'mha_tied': dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}


def make_hf(cfg, seed=0):
    hf_cfg = transformers.Qwen3Config(**cfg, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=256)
    torch.manual_seed(seed)
    ref = transformers.Qwen3ForCausalLM(hf_cfg).float().eval()
    # large weights (std 0.5) so logits are far from uniform: wrong code cannot pass by accident
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * 0.5 if p.dim() > 1 else 1 + 0.3 * torch.randn_like(p))
    return ref


@pytest.mark.parametrize('name', list(CONFIGS))
def test_logits_match_transformers_qwen3(tmp_path, name):
    ref = make_hf(CONFIGS[name])
    ref.save_pretrained(tmp_path)
    ours = Qwen3.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    x = torch.randint(0, CONFIGS[name]['vocab_size'], (3, 21))
    with torch.no_grad():
        expected = ref(x).logits
        got = ours(x)
    assert expected.std() > 1.0  # not near-uniform
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize('name', ['gqa_untied_headdim24', 'gqa4_tied'])
def test_checkpoint_roundtrip_ours_to_transformers(tmp_path, name):
    cfg = Qwen3Config(**CONFIGS[name], rope_theta=10000.0, max_position_embeddings=256, torch_dtype='float32')
    ours = Qwen3(cfg).init_weights(seed=1).eval()
    ours.save_pretrained(tmp_path)
    ref = transformers.Qwen3ForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    back = Qwen3.from_pretrained(str(tmp_path)).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        a, b, c = ours(x), ref(x).logits, back(x)
    assert (a - b).abs().max().item() < 1e-4
    assert torch.equal(a, c)
    assert back.config.tie_word_embeddings == cfg.tie_word_embeddings
    if cfg.tie_word_embeddings:
        assert back.lm_head.weight is back.model.embed_tokens.weight


def test_sharded_checkpoint_loads(tmp_path):
    ref = make_hf(CONFIGS['gqa_untied_headdim24'])
    ours = Qwen3.from_pretrained(_save(ref, tmp_path / 'hf'), dtype=torch.float32)
    ours.save_pretrained(tmp_path / 'sharded', max_shard_bytes=20_000)
    files = os.listdir(tmp_path / 'sharded')
    assert 'model.safetensors.index.json' in files
    assert sum(f.endswith('.safetensors') for f in files) > 2
    back = Qwen3.from_pretrained(str(tmp_path / 'sharded'))
    hf_back = transformers.Qwen3ForCausalLM.from_pretrained(str(tmp_path / 'sharded'), dtype=torch.float32)
    x = torch.randint(0, 301, (1, 9))
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))
        assert (hf_back(x).logits - ours(x)).abs().max() < 1e-4


def _save(ref, path):
    ref.save_pretrained(path)
    return str(path)


def test_kv_cache_decoding_matches_full_forward_with_ragged_rows():
    cfg = Qwen3Config(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg).init_weights(seed=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10)
    lengths = [5, 9, 2]  # rows at different positions
    seqs = [torch.randint(0, cfg.vocab_size, (n + 6,)) for n in lengths]
    B, Tmax = len(lengths), max(lengths)
    cache = model.make_kv_cache(B, 32)
    prompt = torch.zeros(B, Tmax, dtype=torch.long)
    for b, n in enumerate(lengths):
        prompt[b, :n] = seqs[b][:n]
    with torch.no_grad():
        logits = model(prompt, kv_cache=cache, input_pos=torch.zeros(B, dtype=torch.long))
        for b, n in enumerate(lengths):  # prefill of a right-padded row == its own full forward
            full = model(seqs[b][None, :n])
            assert (logits[b, n - 1] - full[0, -1]).abs().max() < 1e-4
        pos = torch.tensor(lengths)
        for step in range(6):
            tok = torch.stack([seqs[b][lengths[b] + step] for b in range(B)])[:, None]
            step_logits = model(tok, kv_cache=cache, input_pos=pos + step)
            for b, n in enumerate(lengths):
                full = model(seqs[b][None, :n + step + 1])
                assert (step_logits[b, 0] - full[0, -1]).abs().max() < 1e-4, (b, step)


def test_bidirectional_sees_later_tokens_and_causal_does_not():
    cfg = CONFIGS['mha_tied']
    for causal in (True, False):
        config = Qwen3Config(**cfg, rope_theta=10000.0, max_position_embeddings=256)
        model = Qwen3(config, num_labels=2, causal=causal).init_weights(seed=3).eval()
        x = torch.randint(0, cfg['vocab_size'], (1, 10))
        y = x.clone()
        y[0, 7] = (x[0, 7] + 1) % cfg['vocab_size']  # change a later token
        with torch.no_grad():
            a, b = model(x), model(y)
        assert a.shape == (1, 10, 2)
        changed_early = (a[0, :7] - b[0, :7]).abs().max().item() > 1e-6
        assert changed_early == (not causal)


def test_classifier_loads_causal_checkpoint_with_fresh_head(tmp_path, capsys):
    ref = make_hf(CONFIGS['gqa4_tied'])
    path = _save(ref, tmp_path)
    clf = Qwen3.from_pretrained(path, num_labels=2)
    assert 'initialized fresh' in capsys.readouterr().out
    assert not clf.config.is_causal and clf.score.weight.shape == (2, 48)
    assert torch.equal(clf.model.embed_tokens.weight, ref.model.embed_tokens.weight)
    clf.save_pretrained(tmp_path / 'clf')
    back = Qwen3.from_pretrained(str(tmp_path / 'clf'))
    assert back.config.num_labels == 2 and not back.config.is_causal
    x = torch.randint(0, 257, (2, 7))
    with torch.no_grad():
        assert torch.equal(back(x), clf(x))


def test_padding_mask_makes_padded_rows_equal_unpadded():
    cfg = Qwen3Config(**CONFIGS['mha_tied'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg, num_labels=2, causal=False).init_weights(seed=4).eval()
    x = torch.randint(0, 128, (1, 6))
    padded = torch.cat([x, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        assert (model(padded, attention_mask=mask)[:, :6] - model(x)).abs().max() < 1e-5


def test_resize_token_embeddings_keeps_old_logits_and_tie():
    cfg = Qwen3Config(**CONFIGS['gqa4_tied'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg).init_weights(seed=5).eval()
    x = torch.randint(0, 257, (1, 8))
    with torch.no_grad():
        before = model(x)
        model.resize_token_embeddings(263)
        after = model(x)
    assert after.shape[-1] == 263 and model.lm_head.weight is model.model.embed_tokens.weight
    assert (after[..., :257] - before).abs().max() < 1e-5
    assert torch.allclose(model.model.embed_tokens.weight[260], model.model.embed_tokens.weight[:257].mean(0))


def test_loss_path_equals_cross_entropy_of_logits():
    cfg = Qwen3Config(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg).init_weights(seed=6)
    x = torch.randint(0, 301, (2, 12))
    y = torch.randint(0, 301, (2, 12))
    y[0, :4] = -100
    loss = model(x, targets=y)
    ref = torch.nn.functional.cross_entropy(model(x).double().flatten(0, 1), y.flatten(), ignore_index=-100)
    assert abs(loss.item() - ref.item()) < 1e-4
    loss.backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def model_and_float64_copy(seed):
    """A small untied GQA model initialized from `seed`, and a float64 copy of it (the reference)."""
    cfg = dict(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(Qwen3Config(**cfg)).init_weights(seed=seed)
    ref_model = Qwen3(Qwen3Config(**cfg)).double()
    ref_model.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    return model, ref_model


def test_loss_through_supervised_rows_only_has_the_full_logits_gradients():
    # lm_loss sends only rows with a target through the LM head; value and every gradient must
    # equal float64 cross-entropy over the full logits (ignored rows contribute nothing there)
    model, ref_model = model_and_float64_copy(seed=7)
    x = torch.randint(0, 301, (3, 10))
    y = torch.randint(0, 301, (3, 10))
    y[0, :6] = -100
    y[2, 3:] = -100  # a padded row
    model(x, targets=y).backward()
    torch.nn.functional.cross_entropy(ref_model(x).flatten(0, 1), y.flatten(), ignore_index=-100).backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.allclose(p.grad.double(), q.grad, atol=1e-5, rtol=1e-4), name
    # nothing supervised: a zero loss that still backpropagates (zero gradients), not an error
    model.zero_grad()
    loss = model(x, targets=torch.full_like(y, -100))
    loss.backward()
    assert loss.item() == 0.0 and model.lm_head.weight.grad.abs().sum() == 0


def test_weighted_loss_is_the_weighted_float64_cross_entropy_over_the_target_count():
    # lm_loss with target_weights w: sum_i w_i CE_i / N over the N supervised targets, value and
    # gradients against float64 cross-entropy over the full logits; w = 1 is the plain mean
    model, ref_model = model_and_float64_copy(seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 301, (3, 10), generator=g)
    y = torch.randint(0, 301, (3, 10), generator=g)
    y[1, :4] = -100
    w = torch.where(torch.rand(3, 10, generator=g) < 0.3, 5.0, 1.0)
    w[1, 0] = 100.0  # on an ignored target: must not count
    loss = model(x, targets=y, target_weights=w)
    loss.backward()
    ce = torch.nn.functional.cross_entropy(ref_model(x).flatten(0, 1), y.flatten(), ignore_index=-100,
                                           reduction='none')
    ref = (ce * w.flatten().double()).sum() / (y != -100).sum()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-5 * ref.item()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.allclose(p.grad.double(), q.grad, atol=1e-5, rtol=1e-4), name
    assert model(x, targets=y, target_weights=torch.ones(3, 10)).item() == model(x, targets=y).item()


def test_num_params_and_flops_per_token():
    cfg = Qwen3Config(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    # 6 * matmul params (LM head included) + 12 * L * T * heads * head_dim
    expected = 6 * (model.num_params() - 301 * 64) + 12 * 2 * 100 * 4 * 24
    assert model.flops_per_token(100) == expected


# ---- broken checkpoints: each error names what is wrong


def _good_checkpoint(tmp_path):
    cfg = Qwen3Config(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    Qwen3(cfg).init_weights(seed=7).save_pretrained(tmp_path)
    return tmp_path


def test_missing_tensor_error_names_it(tmp_path):
    path = _good_checkpoint(tmp_path)
    tensors = load_file(path / 'model.safetensors')
    del tensors['model.layers.1.mlp.up_proj.weight']
    save_file(tensors, path / 'model.safetensors')
    with pytest.raises(KeyError, match='model.layers.1.mlp.up_proj.weight'):
        Qwen3.from_pretrained(str(path))


def test_wrong_shape_error_names_it(tmp_path):
    path = _good_checkpoint(tmp_path)
    tensors = load_file(path / 'model.safetensors')
    tensors['model.layers.0.self_attn.k_proj.weight'] = torch.zeros(10, 64)
    save_file(tensors, path / 'model.safetensors')
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.k_proj.weight.*\(10, 64\)"):
        Qwen3.from_pretrained(str(path))


def test_corrupt_file_error_names_it(tmp_path):
    path = _good_checkpoint(tmp_path)
    with open(path / 'model.safetensors', 'r+b') as f:
        f.seek(0)
        f.write(b'\xff' * 16)
    with pytest.raises(ValueError, match='model.safetensors'):
        Qwen3.from_pretrained(str(path))
    with open(path / 'config.json', 'w') as f:
        f.write('{"vocab_size": 10,')
    with pytest.raises(ValueError, match='config.json'):
        Qwen3.from_pretrained(str(path))


def test_missing_hub_id_offline_is_clear_error(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='no-such-org/no-such-model'):
        Qwen3.from_pretrained('no-such-org/no-such-model')


# ---- activation checkpointing


def _loss_and_grads(model, x, y, mask=None):
    """(loss, {name: grad}, bytes the graph saved for backward outside checkpointed regions)."""
    model.zero_grad(set_to_none=True)
    with saved_for_backward(model) as saved:
        loss = model(x, targets=y, attention_mask=mask)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved.values())


@pytest.mark.parametrize('compile_backend', [None, 'aot_eager'])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(compile_backend):
    cfg = Qwen3Config(**CONFIGS['gqa_untied_headdim24'], rope_theta=10000.0, max_position_embeddings=256)
    x = torch.randint(0, 301, (2, 17))
    y = torch.randint(0, 301, (2, 17))
    y[1, :5] = -100
    ref_loss, ref_grads, ref_saved = _loss_and_grads(Qwen3(cfg).init_weights(seed=8), x, y)
    model = Qwen3(cfg).init_weights(seed=8).set_activation_checkpointing(True)
    if compile_backend:  # compile_blocks' compiled block is what checkpointing recomputes
        model.compile_blocks(backend=compile_backend)
    loss, grads, saved = _loss_and_grads(model, x, y)
    assert saved < ref_saved / 3  # the blocks' insides are no longer saved: checkpointing is on
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-5, msg=name)
    model.eval()  # a no-grad forward (eval, CHRPO's old log-probs) runs plainly and matches
    with torch.no_grad():
        torch.testing.assert_close(model(x), Qwen3(cfg).init_weights(seed=8)(x), atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_with_padding_mask_bidirectional():
    cfg = Qwen3Config(**CONFIGS['gqa4_tied'], rope_theta=10000.0, max_position_embeddings=256)
    x = torch.randint(0, 257, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, 7:] = 0
    y = torch.randint(0, 2, (2, 11))
    ref = _loss_and_grads(Qwen3(cfg, num_labels=2, causal=False).init_weights(seed=9), x, y, mask)
    got = _loss_and_grads(Qwen3(cfg, num_labels=2, causal=False).init_weights(seed=9)
                          .set_activation_checkpointing(True), x, y, mask)
    torch.testing.assert_close(got[0], ref[0], atol=1e-6, rtol=1e-6)
    assert got[2] < ref[2] / 3
    for name, g in ref[1].items():
        torch.testing.assert_close(got[1][name], g, atol=1e-6, rtol=1e-5, msg=name)


# ---- masked GQA attention: k/v expanded so CUDA's fused kernels are eligible


def test_masked_gqa_expands_kv_and_equals_enable_gqa(monkeypatch):
    cfg = Qwen3Config(**CONFIGS['gqa4_tied'], rope_theta=10000.0, max_position_embeddings=256)
    attn = Qwen3(cfg).init_weights(seed=10).model.layers[0].self_attn
    B, T = 2, 9
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, 8, T, 16, generator=gen)
    k, v = torch.randn(B, 2, T, 16, generator=gen), torch.randn(B, 2, T, 16, generator=gen)
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[1, ..., 6:] = False
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention',
                        lambda q, k, v, **kw: calls.append((k.shape[1], kw['enable_gqa'])) or real_sdpa(q, k, v, **kw))
    got = attn._sdpa(q, k, v, mask, False)
    ref = real_sdpa(q, k, v, attn_mask=mask, enable_gqa=True)  # the path it replaces
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert calls == [(8, False)]  # all 8 query heads' k/v, no enable_gqa: fused kernels eligible
    attn._sdpa(q, k, v, None, True)  # no mask: flash takes GQA natively, nothing copied
    attn._sdpa(q[:, :, :1], k, v, mask, False)  # one query keeps enable_gqa (cached decode steps take one_query_attention)
    assert calls[1:] == [(2, True), (2, True)]
    # and end to end: the padded bidirectional classifier equals its unpadded rows
    clf = Qwen3(Qwen3Config(**CONFIGS['gqa4_tied'], rope_theta=10000.0, max_position_embeddings=256),
                num_labels=2, causal=False).init_weights(seed=11).eval()
    x = torch.randint(0, 257, (1, 6))
    padded = torch.cat([x, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        assert (clf(padded, attention_mask=torch.tensor([[1] * 6 + [0] * 3]))[:, :6] - clf(x)).abs().max() < 1e-5


def test_one_query_attention_equals_float64_attention_over_expanded_heads():
    # the decode step's GQA attention reads each k/v head once for its group of query heads;
    # reference: float64 softmax(q k^T / sqrt(d)) v with k/v repeated to every query head
    # (repeat_interleave: query head h uses k/v head h // group), per-row visibility masks
    from model import one_query_attention
    gen = torch.Generator().manual_seed(4)
    B, heads, kv_heads, S, d = 3, 8, 2, 11, 16
    q = torch.randn(B, heads, 1, d, generator=gen)
    k, v = torch.randn(B, kv_heads, S, d, generator=gen), torch.randn(B, kv_heads, S, d, generator=gen)
    visible = torch.tensor([11, 4, 1])  # row b sees slots 0 .. visible[b] - 1
    mask = (torch.arange(S)[None, :] < visible[:, None])[:, None, None, :]
    got = one_query_attention(q, k, v, mask)
    kr, vr = k.double().repeat_interleave(heads // kv_heads, 1), v.double().repeat_interleave(heads // kv_heads, 1)
    scores = (q.double() @ kr.transpose(-1, -2) / d ** 0.5).masked_fill(~mask, float('-inf'))
    want = torch.softmax(scores, dim=-1) @ vr
    assert got.shape == (B, heads, 1, d)
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert torch.allclose(got[2, :, 0].double(), vr[2, :, 0])  # one visible slot: its value, exactly weighted 1


def test_cached_decode_step_never_calls_sdpa(monkeypatch):
    # SDPA with a mask and GQA copies the cache to every query head (the math kernel); a decode
    # step (T = 1) must take one_query_attention, prefill (T > 1) keeps SDPA
    cfg = Qwen3Config(**CONFIGS['gqa4_tied'], rope_theta=10000.0, max_position_embeddings=256)
    model = Qwen3(cfg).init_weights(seed=12).eval()
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention',
                        lambda *a, **kw: calls.append(a[0].shape[2]) or real_sdpa(*a, **kw))
    cache = model.make_kv_cache(2, 16)
    with torch.no_grad():
        model(torch.randint(0, 257, (2, 5)), kv_cache=cache, input_pos=torch.zeros(2, dtype=torch.long))
        n_prefill = len(calls)
        model(torch.randint(0, 257, (2, 1)), kv_cache=cache, input_pos=torch.tensor([5, 3]))
    assert n_prefill == cfg.num_hidden_layers and set(calls) == {5}


# ---- token rows new to a checkpoint (budget tokens in Qwen3's padding rows)


def _save_with_tokenizer(model, path, n_tokens):
    """A checkpoint whose own tokenizer.json knows ids 0..n_tokens-1 (the last two as added tokens)."""
    import tokenizers
    model.save_pretrained(path)
    vocab = {f'w{i}': i for i in range(n_tokens - 2)}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='w0'))
    tk.add_special_tokens(['<|a|>', '<|b|>'])
    tk.save(os.path.join(path, 'tokenizer.json'))
    return str(path)


@pytest.mark.parametrize('tied', [True, False])
def test_budget_tokens_in_padding_rows_start_at_the_mean_of_trained_rows(tmp_path, tied):
    from model import trained_vocab_size
    cfg = Qwen3Config(**{**CONFIGS['gqa4_tied'], 'vocab_size': 64, 'tie_word_embeddings': tied},
                      rope_theta=10000.0, max_position_embeddings=256)
    # 50 tokens trained, 14 padding rows, like Qwen3's 151,669 tokens in 151,936 rows
    path = _save_with_tokenizer(Qwen3(cfg).init_weights(seed=12), tmp_path, 50)
    model = Qwen3.from_pretrained(path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    n_trained = trained_vocab_size(path, default=64)
    assert n_trained == 50
    new = model.fit_vocab(56, n_trained)  # the tokenizer plus six budget tokens: 50..55, inside the 64 rows
    assert new == list(range(50, 56)) and model.config.vocab_size == 64  # no resize happened
    heads = [('model.embed_tokens.weight', model.model.embed_tokens.weight)]
    if not tied:
        heads.append(('lm_head.weight', model.lm_head.weight))
    for name, w in heads:
        mean = before[name][:50].mean(0)
        torch.testing.assert_close(w[50:56], mean.expand(6, -1), atol=1e-6, rtol=1e-6)
        assert torch.equal(w[:50], before[name][:50])  # trained rows untouched
        assert torch.equal(w[56:], before[name][56:])  # padding rows no token uses: left alone
    for name, p in model.named_parameters():
        if name not in dict(heads):
            assert torch.equal(p, before[name]), name
    assert model.fit_vocab(56, 56) == []  # a checkpoint that knows the tokens (our SFT output): nothing new


def test_fit_vocab_resizes_when_the_tokenizer_outgrows_the_rows(tmp_path):
    from model import trained_vocab_size
    cfg = Qwen3Config(**{**CONFIGS['gqa_untied_headdim24'], 'vocab_size': 40}, rope_theta=10000.0,
                      max_position_embeddings=256)
    path = _save_with_tokenizer(Qwen3(cfg).init_weights(seed=13), tmp_path, 36)
    model = Qwen3.from_pretrained(path)
    old = model.lm_head.weight.detach().clone()
    new = model.fit_vocab(46, trained_vocab_size(path, default=40))
    assert new == list(range(36, 46)) and model.config.vocab_size == 46
    assert model.model.embed_tokens.weight.shape == (46, 64) and model.lm_head.weight.shape == (46, 64)
    torch.testing.assert_close(model.lm_head.weight[36:], old[:36].mean(0).expand(10, -1), atol=1e-6, rtol=1e-6)
    assert torch.equal(model.lm_head.weight[:36], old[:36])
    assert trained_vocab_size(str(tmp_path / 'nowhere'), default=7) == 7  # no tokenizer.json: the default
    (tmp_path / 'tokenizer.json').write_text('{"model": ')
    with pytest.raises(ValueError, match='tokenizer.json'):
        trained_vocab_size(str(tmp_path), default=7)
