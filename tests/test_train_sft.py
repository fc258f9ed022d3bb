"""
Tests for train_sft.py: loss masking, the loss going down, two-rank DDP / FSDP2 runs under
torchrun (gloo) ending with identical weights, kill-and-resume reproducing an uninterrupted
run, HF (transformers) loading of the checkpoint, and clear errors on malformed data.

    python -m pytest tests/test_train_sft.py -q
"""
import json
import os
import random
import subprocess
import sys

import pytest
import torch

import data
import train_sft
from common import find_checkpoint, load_train_state, read_jsonl
from digest import digest_path, param_digest
from corpus import build_corpus
from model import Qwen3
from tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--n_layer=2', '--n_embd=32', '--n_head=2', '--n_kv_head=1', '--head_dim=16', '--intermediate=64',
        '--batch_size=4', '--eval_examples=4', '--log_interval=1', '--learning_rate=0.003', '--max_len=128']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """A handful of corpus records and a small tokenizer, written the way `python corpus.py` does."""
    d = tmp_path_factory.mktemp('data')
    build_corpus(str(d), seed=7, sizes={'train': 24, 'val': 4, 'test': 2, 'sft_pool': 2, 'rl_pool': 2},
                      vocab_size=400, tokenizer_docs=24, verbose=False)
    return d


def data_args(d):
    return [f'--data_path={d}/train.jsonl', f'--val_path={d}/val.jsonl', f'--tokenizer_path={d}/tokenizer']


def run_script(args, nproc=1, check=True, script='train_sft.py', env_extra=None):
    """Run train_sft.py (or tests/sft_worker.py, which adds the kill / weight-digest hooks)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', **(env_extra or {}))
    if nproc == 1:
        cmd = [sys.executable, script]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', script]
    p = subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    if check and p.returncode != 0:
        raise AssertionError(f'{" ".join(cmd + args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}')
    return p


def ckpt_weights(out_dir):
    return Qwen3.from_pretrained(find_checkpoint(str(out_dir)), dtype=torch.float32).state_dict()


# -----------------------------------------------------------------------------
# data and schedule


def test_loss_mask_excludes_prompt(tiny_data):
    tok = load_tokenizer(str(tiny_data / 'tokenizer'))
    examples = train_sft.load_examples(str(tiny_data / 'train.jsonl'), tok, 'none', 512)
    records = read_jsonl(str(tiny_data / 'train.jsonl'))
    x, y, n_tokens = train_sft.make_batch(examples, [0, 1, 2], tok.pad_id, 'cpu')
    assert n_tokens == sum(len(examples[i][0]) for i in range(3))
    for row in range(3):
        # independent reference: the prompt is exactly render_prompt's tokens
        n_prompt = len(tok.encode(data.render_prompt(records[row]['question'], 'none')))
        ids = examples[row][0]
        assert (y[row, :n_prompt - 1] == -100).all()  # targets inside the prompt are ignored
        # every completion token is a target, ending with <|im_end|>
        assert y[row, n_prompt - 1:len(ids) - 1].tolist() == ids[n_prompt:]
        assert (y[row, len(ids) - 1:] == -100).all()  # padding
        assert tok.decode(ids[n_prompt:]).startswith('<think>')


def test_truncation_counts_and_drops_examples_without_targets(tiny_data, capsys):
    tok = load_tokenizer(str(tiny_data / 'tokenizer'))
    full = train_sft.load_examples(str(tiny_data / 'train.jsonl'), tok, 'none', 10_000)
    n_prompt_min = min(m.index(1) for _, m in full)
    cut = n_prompt_min + 5
    ex = train_sft.load_examples(str(tiny_data / 'train.jsonl'), tok, 'none', cut)
    out = capsys.readouterr().out
    assert all(len(ids) <= cut for ids, _ in ex)
    assert all(any(m[1:]) for _, m in ex)
    n_long = sum(len(ids) > cut for ids, _ in full)
    n_dropped = sum(not any(m[:cut][1:]) for _, m in full)
    assert f'{n_long} truncated' in out and f'{n_dropped} dropped' in out
    assert len(ex) == len(full) - n_dropped


def test_batch_stream_covers_each_epoch_once_across_ranks():
    n, B, world = 10, 3, 2
    seen = []
    for m in range(5):  # 5 micro steps * 2 ranks * 3 = 30 items = 3 epochs
        for r in range(world):
            seen += train_sft.batch_indices(n, 5, m, r, world, B)
    for e in range(3):
        assert sorted(seen[e * n:(e + 1) * n]) == list(range(n))
        assert seen[e * n:(e + 1) * n] == train_sft.epoch_permutation(n, 5, e)
    assert train_sft.batch_indices(n, 5, 3, 1, world, B) == train_sft.batch_indices(n, 5, 3, 1, world, B)


def test_length_grouped_batches_cover_each_epoch_once_with_less_padding():
    rng = random.Random(0)
    n, B, world, pool = 96, 4, 2, 6
    lengths = [rng.randint(100, 400) for _ in range(n)]
    seen, pad_grouped, pad_random = [], 0, 0
    for m in range(n // (B * world)):
        for r in range(world):
            idx = train_sft.batch_indices(n, 5, m, r, world, B, lengths, pool)
            rnd = train_sft.batch_indices(n, 5, m, r, world, B)
            seen += idx
            pad_grouped += sum(max(lengths[i] for i in idx) - lengths[i] for i in idx)
            pad_random += sum(max(lengths[i] for i in rnd) - lengths[i] for i in rnd)
    assert sorted(seen) == list(range(n))  # one epoch, every example exactly once
    assert pad_grouped < pad_random / 3
    assert seen == [i for m in range(n // (B * world)) for r in range(world)
                    for i in train_sft.batch_indices(n, 5, m, r, world, B, lengths, pool)]  # deterministic


def test_malformed_data_gives_clear_error(tiny_data, tmp_path):
    tok = load_tokenizer(str(tiny_data / 'tokenizer'))
    good = read_jsonl(str(tiny_data / 'train.jsonl'))[0]
    bad = dict(good, id='broken-7')
    del bad['cot']
    path = tmp_path / 'bad.jsonl'
    path.write_text(json.dumps(good) + '\n' + json.dumps(bad) + '\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 2 \(id broken-7\).*'cot'"):
        train_sft.load_examples(str(path), tok, 'none', 512)
    path.write_text(json.dumps(good) + '\n{"id": "x", "question": \n')
    with pytest.raises(ValueError, match=r'bad\.jsonl:2: invalid JSON'):
        train_sft.load_examples(str(path), tok, 'none', 512)
    path.write_text(json.dumps(dict(good, mode='0.3')) + '\n')  # not a budget mode
    with pytest.raises(ValueError, match=r'bad\.jsonl: record 1 \(id train-00000\)'):
        train_sft.load_examples(str(path), tok, 'none', 512)
    # the script itself fails with that message (not a traceback deep inside batching)
    p = run_script(['--data_path=' + str(path), f'--tokenizer_path={tiny_data}/tokenizer', '--val_path=',
                    f'--out_dir={tmp_path}/o', '--max_iters=1'], check=False)
    assert p.returncode != 0 and 'bad.jsonl: record 1' in p.stderr


# -----------------------------------------------------------------------------
# training runs


def test_sft_loss_falls_on_tiny_set(tiny_data, tmp_path, monkeypatch):
    cfg = dict(out_dir=str(tmp_path / 'o'), data_path=str(tiny_data / 'train.jsonl'), val_path='',
               tokenizer_path=str(tiny_data / 'tokenizer'), n_layer=2, n_embd=32, n_head=2, n_kv_head=1,
               head_dim=16, intermediate=64, batch_size=8, max_iters=30, learning_rate=1e-2, max_len=128,
               warmup_frac=0.05, log_interval=5, ckpt_interval=1000)
    for k, v in cfg.items():
        monkeypatch.setattr(train_sft, k, v)
    train_sft.main()
    rows = [r for r in read_jsonl(str(tmp_path / 'o' / 'metrics.jsonl')) if 'loss' in r]
    assert rows[0]['step'] == 5 and rows[-1]['step'] == 30
    assert rows[-1]['loss'] < 0.6 * rows[0]['loss']  # ln(400) = 6.0 at init
    assert all(a > b for a, b in zip([r['loss'] for r in rows], [r['loss'] for r in rows[1:]]))
    assert load_train_state(find_checkpoint(str(tmp_path / 'o')))['step'] == 30


@pytest.fixture(scope='module')
def ddp_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    run_script(TINY + data_args(tiny_data) + [f'--out_dir={out}', '--max_iters=4', '--global_batch_size=16',
                                              '--eval_interval=2'], nproc=2, script='tests/sft_worker.py')
    return out


def test_torchrun_two_ranks_end_with_identical_weights(ddp_run):
    h0 = open(digest_path(ddp_run, 0)).read()
    h1 = open(digest_path(ddp_run, 1)).read()
    assert h0 == h1
    # and the checkpoint holds those weights, trained (not the init)
    assert param_digest(ckpt_weights(ddp_run)) == h0.strip()
    state = load_train_state(find_checkpoint(str(ddp_run)))
    assert state['step'] == 4 and state['world_size'] == 2
    rows = read_jsonl(str(ddp_run / 'metrics.jsonl'))
    assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 3, 4]
    assert [r['step'] for r in rows if 'val_loss' in r] == [2, 4]


def test_checkpoint_loads_in_transformers_with_same_logits(ddp_run, tiny_data):
    import transformers
    ckpt = find_checkpoint(str(ddp_run))
    ours = Qwen3.from_pretrained(ckpt, dtype=torch.float32).eval()
    theirs = transformers.Qwen3ForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    tok = load_tokenizer(str(tiny_data / 'tokenizer'))
    ids = torch.tensor([tok.encode(data.render_prompt('Mia has 3 apples. How many?', 'none'))])
    with torch.no_grad():
        a, b = ours(ids), theirs(ids).logits
    assert a.shape == b.shape == (1, ids.shape[1], tok.vocab_size)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert os.path.isfile(os.path.join(ckpt, 'tokenizer.json'))


def test_fsdp_two_ranks_matches_ddp(ddp_run, tiny_data, tmp_path):
    run_script(TINY + data_args(tiny_data) + [f'--out_dir={tmp_path}', '--max_iters=4', '--global_batch_size=16',
                                              '--fsdp=True', '--eval_interval=2'], nproc=2)
    a, b = ckpt_weights(ddp_run), ckpt_weights(tmp_path)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    # the gathered optimizer state is complete (resumable): one entry per parameter
    state = load_train_state(find_checkpoint(str(tmp_path)))
    assert len(state['optimizer']['state']) == len(a) - ('lm_head.weight' in a)


def test_fsdp_bf16_gathers_bf16_and_keeps_fp32_shards_and_adamw_state(tiny_data, tmp_path):
    """FSDP2 with a MixedPrecisionPolicy: blocks compute with bf16 weights (all-gathered in bf16,
    not fp32), while the shards, the checkpoint and AdamW's state stay fp32."""
    run_script(TINY + data_args(tiny_data) + [f'--out_dir={tmp_path}', '--max_iters=2', '--global_batch_size=16',
                                              '--fsdp=True', '--autocast_dtype=bfloat16', '--eval_interval=0'],
               nproc=2, script='tests/sft_worker.py')
    assert [(tmp_path / f'compute_dtype_rank{r}.txt').read_text() for r in (0, 1)] == ['torch.bfloat16'] * 2
    assert all(v.dtype == torch.float32 for v in ckpt_weights(tmp_path).values())
    state = load_train_state(find_checkpoint(str(tmp_path)))['optimizer']['state']
    assert all(s['exp_avg'].dtype == torch.float32 for s in state.values())


def test_killed_run_resumes_to_same_weights(tiny_data, tmp_path):
    common = TINY + data_args(tiny_data) + ['--max_iters=4', '--ckpt_interval=2', '--eval_interval=0']
    run_script(common + [f'--out_dir={tmp_path}/full'])
    crashed = run_script(common + [f'--out_dir={tmp_path}/killed'], check=False, script='tests/sft_worker.py',
                         env_extra={'SFT_KILL_AT_STEP': '3'})
    assert crashed.returncode != 0
    ckpt = find_checkpoint(str(tmp_path / 'killed'))
    assert ckpt is not None and load_train_state(ckpt)['step'] == 2  # the last checkpoint before the kill
    assert not os.path.exists(str(tmp_path / 'killed' / 'ckpt.tmp'))
    run_script(common + [f'--out_dir={tmp_path}/killed', '--resume=True'])
    a, b = ckpt_weights(tmp_path / 'full'), ckpt_weights(tmp_path / 'killed')
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_train_state(find_checkpoint(str(tmp_path / 'killed')))['step'] == 4
    steps = [r['step'] for r in read_jsonl(str(tmp_path / 'killed' / 'metrics.jsonl')) if 'loss' in r]
    assert steps == [1, 2, 3, 4]  # the killed run's step-3 line (if any) was dropped on resume
    full = [r['loss'] for r in read_jsonl(str(tmp_path / 'full' / 'metrics.jsonl')) if 'loss' in r]
    resumed = [r['loss'] for r in read_jsonl(str(tmp_path / 'killed' / 'metrics.jsonl')) if 'loss' in r]
    assert full == pytest.approx(resumed, rel=1e-6)
