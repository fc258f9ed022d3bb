"""train_sft.py at paper scale, checked on CPU (issue 12): budget-token rows new to a checkpoint
start as the mean trained row, also inside Qwen3-like padding rows; the global batch is the same
on 1 and 8 GPUs; bf16 autocast keeps fp32 master weights and AdamW state; activation
checkpointing is wired and changes nothing; the memory plan refuses an over-budget run naming
the keys to change, and leaves an existing run's files as they were.

    python -m pytest tests/test_sft_precision.py -q
"""
import os

import pytest
import torch

import train_sft
from common import find_checkpoint, load_train_state
from corpus import build_corpus
from digest import folder_digest
from model import Qwen3
from qwen_like import PADDING_ROWS, PADDING_VALUE, qwen_like_checkpoint
from tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp('sft_precision')
    build_corpus(str(d), seed=7, sizes={'train': 16, 'val': 2, 'test': 2, 'sft_pool': 2, 'rl_pool': 2},
                 vocab_size=400, tokenizer_docs=16, verbose=False)
    return d


def run_main(monkeypatch, d, out_dir, **kw):
    cfg = dict(out_dir=str(out_dir), data_path=str(d / 'train.jsonl'), val_path='', tokenizer_path=str(d / 'tokenizer'),
               init_from='scratch', n_layer=2, n_embd=32, n_head=2, n_kv_head=1, head_dim=16, intermediate=64,
               batch_size=4, global_batch_size=8, max_iters=2, learning_rate=1e-3, warmup_frac=0.0, max_len=128,
               log_interval=1, ckpt_interval=1, eval_interval=0, resume=False, autocast_dtype='auto',
               activation_checkpointing=False, memory_budget_gb=0.0, compile=False)
    cfg.update(kw)
    for k, v in cfg.items():
        monkeypatch.setattr(train_sft, k, v)
    return train_sft.main()


def test_budget_rows_new_to_the_checkpoint_start_as_the_mean_trained_row(tmp_path):
    ckpt = qwen_like_checkpoint(tmp_path)
    tok = load_tokenizer(ckpt)  # appends the six budget tokens after the checkpoint's own ids
    saved = Qwen3.from_pretrained(ckpt, dtype=torch.float32)
    n_ids = saved.config.vocab_size - PADDING_ROWS
    budget = sorted(tok.budget_ids.values())
    assert budget == list(range(n_ids, n_ids + 6)) and tok.vocab_size < saved.config.vocab_size  # in the padding
    model = train_sft.build_model(tok, ckpt, torch.device('cpu'), {}, seed=0)
    for w, w0 in ((model.model.embed_tokens.weight, saved.model.embed_tokens.weight),
                  (model.lm_head.weight, saved.lm_head.weight)):  # untied: the head's rows too
        mean = w0[:n_ids].mean(0)
        for i in budget:
            torch.testing.assert_close(w[i], mean)
        assert torch.equal(w[:n_ids], w0[:n_ids])  # trained rows untouched
        assert (w[tok.vocab_size:] == PADDING_VALUE).all()  # padding rows no token uses: left alone


def test_global_batch_is_the_same_on_1_and_8_gpus():
    cfg = {}
    exec(open(os.path.join(ROOT, 'config', 'qwen3_1p7b_sft.py')).read(), {}, cfg)
    B, G = cfg['batch_size'], cfg['global_batch_size']
    for world in (1, 2, 8):
        accum = train_sft.accumulation_steps(G, B, world)
        assert B * accum * world == G == 64
    assert train_sft.accumulation_steps(G, B, 1) == 32 and train_sft.accumulation_steps(G, B, 8) == 4
    assert train_sft.accumulation_steps(0, 16, 2) == 1  # 0: one micro-batch per rank (the tiny default)
    with pytest.raises(ValueError, match=r'global_batch_size=64 is not a multiple of batch_size \* world size = 3 \* 8'):
        train_sft.accumulation_steps(64, 3, 8)
    with pytest.raises(ValueError, match='change batch_size'):
        train_sft.accumulation_steps(8, 16, 1)


def test_a_step_accumulates_global_batch_over_batch_size_micro_batches(tiny_data, tmp_path, monkeypatch):
    seen = []
    real = train_sft.accumulate_gradients
    monkeypatch.setattr(train_sft, 'accumulate_gradients',
                        lambda model, micro, *a: seen.append([x.shape[0] for x, _, _ in micro]) or real(model, micro, *a))
    run_main(monkeypatch, tiny_data, tmp_path / 'o', batch_size=4, global_batch_size=12)
    assert seen == [[4, 4, 4]] * 2  # 12 examples a step in one process: 3 micro-batches of 4, two steps
    seen.clear()
    run_main(monkeypatch, tiny_data, tmp_path / 'p', batch_size=4, global_batch_size=0)
    assert seen == [[4]] * 2


def test_bf16_autocast_keeps_fp32_master_weights_and_adamw_state(tiny_data, tmp_path, monkeypatch):
    model = run_main(monkeypatch, tiny_data, tmp_path / 'o', autocast_dtype='bfloat16', learning_rate=1e-6)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = load_train_state(find_checkpoint(str(tmp_path / 'o')))['optimizer']['state']
    assert state and all(s['exp_avg'].dtype == s['exp_avg_sq'].dtype == torch.float32 for s in state.values())
    gain = model.model.layers[0].post_attention_layernorm.weight  # 1.0 at init; bf16 could not move it by 1e-6
    assert (gain != 1.0).any() and ((gain - 1.0).abs() < 1e-5).all()


def test_activation_checkpointing_switch_is_wired_and_changes_nothing(tiny_data, tmp_path, monkeypatch):
    plain = run_main(monkeypatch, tiny_data, tmp_path / 'plain')
    ckpt = run_main(monkeypatch, tiny_data, tmp_path / 'ckpt', activation_checkpointing=True)
    assert ckpt.activation_checkpointing and not plain.activation_checkpointing
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(ckpt.state_dict()[k], v, atol=1e-6, rtol=1e-5, msg=k)


def test_over_budget_run_is_refused_naming_the_keys_and_nothing_is_lost(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'o'
    run_main(monkeypatch, tiny_data, out)  # a finished run: checkpoint and metrics
    printed = capsys.readouterr().out
    assert 'memory plan: train_sft' in printed and 'activations (512 tokens' in printed  # B x max_len
    before = folder_digest(out)
    budget = 2.0 + 1e-4  # GiB: the plan's 2 GiB runtime allowance and a little; the activations do not fit
    with pytest.raises(MemoryError, match=r'train_sft: the sft step phase needs .*activations .*'
                                          r'change batch_size, max_len, activation_checkpointing'):
        run_main(monkeypatch, tiny_data, out, max_iters=4, resume=True, memory_budget_gb=budget)
    assert folder_digest(out) == before  # the refused resume trimmed no metrics, wrote no checkpoint


def test_ckpt_interval_zero_saves_only_the_final_checkpoint(tiny_data, tmp_path, monkeypatch):
    saved = []
    real = train_sft.save_train_checkpoint
    monkeypatch.setattr(train_sft, 'save_train_checkpoint',
                        lambda *a, **k: saved.append(1) or real(*a, **k))
    run_main(monkeypatch, tiny_data, tmp_path / 'o', max_iters=3, ckpt_interval=0)
    assert len(saved) == 1  # the end of the run, never a modulo by zero
