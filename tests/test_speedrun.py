"""End to end: `bash speedrun.sh --smoke` runs every stage with minuscule sizes and writes
the report; a second run skips every finished stage."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ['data', 'base', 'compressor', 'sft_ratio', 'teacher', 'policy_data', 'sft', 'chrpo', 'eval']


def test_smoke_speedrun_writes_report_and_rerun_skips_finished_stages(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), SKIP_INSTALL='1', PYTHON=sys.executable)  # this interpreter, as it is
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
