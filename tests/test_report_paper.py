"""The --paper tables of the report (report.method_table, report.ablation_table) on a small fake
evaluation: row order (ours and the TokenSkip-style baseline interleaved per ratio, the
ablations in the paper's order), the paired differences against hand-computed numbers
(metrics.paired_comparison), and the main report unchanged without those rows.
    python -m pytest tests/test_report_paper.py -q
"""
import pytest

import metrics
from report import write_report

Q = ['q0', 'q1', 'q2', 'q3']


def row_samples(correct, think, budget=None):
    """One sample per question: correct flags and think tokens (a number, or one per question)."""
    think = think if isinstance(think, list) else [think] * len(Q)
    return [{'id': q, 'correct': bool(c), 'think_tokens': t, 'finish_reason': 'stop', 'budget': budget,
             'difficulty': 2, 'tokens': [1] * 5, 'latency_s': 0.1} for q, c, t in zip(Q, correct, think)]


def fake_results():
    r = {('base', 'none'): row_samples([1, 1, 1, 0], 100),
         ('sft', '0.2'): row_samples([1, 1, 0, 0], 30, '0.2'), ('sft', '0.4'): row_samples([1, 1, 1, 0], 50, '0.4'),
         ('sft', '0.6'): row_samples([1, 1, 1, 0], 60, '0.6'), ('sft', 'auto'): row_samples([1, 1, 0, 0], 45, '0.4'),
         ('sft_ratio', '0.2'): row_samples([1, 1, 1, 0], 31, '0.2'),
         ('tokenskip', '0.2'): row_samples([1, 0, 0, 0], 28, '0.2'),
         ('tokenskip', '0.4'): row_samples([1, 1, 0, 0], 44, '0.4'),
         ('chrpo', 'auto'): row_samples([1, 1, 1, 0], 40, '0.4'),
         ('chrpo_no_both', 'auto'): row_samples([1, 1, 1, 1], 70, '0.8'),
         ('chrpo_no_ctrl', 'auto'): row_samples([1, 1, 0, 0], [50, 50, 60, 40], '0.4')}
    return {('syn', m, md): v for (m, md), v in r.items()}


PAIRED = {'sft': 'tokenskip', 'sft_ratio': 'tokenskip', 'chrpo_no_ctrl': 'chrpo', 'chrpo_no_mode': 'chrpo',
          'chrpo_no_both': 'chrpo'}


def table(text, heading):
    """The markdown table rows under a heading (up to the next blank line after the table)."""
    lines = text.split('\n')
    start = next(i for i, line in enumerate(lines) if line == heading)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith('|'))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith('|')), len(lines))
    return lines[first + 2:end]


def test_paired_comparison_matches_hand_computed_differences():
    rows = {(r['model'], r['mode']): r for r in metrics.summarize(fake_results(), paired_with=PAIRED)}
    # sft 0.2 - tokenskip 0.2, per question [0, 1, 0, 0]: mean 0.25, sample std 0.5, 1.96 * 0.5 / 2
    r = rows[('sft', '0.2')]
    assert r['paired_with'] == 'tokenskip'
    assert r['acc_diff_vs_pair'] == pytest.approx(0.25) and r['acc_diff_pair_ci95'] == pytest.approx(0.49)
    assert r['think_diff_vs_pair'] == pytest.approx(2.0) and r['think_diff_pair_ci95'] == pytest.approx(0.0)
    # chrpo_no_ctrl - chrpo: accuracy [0, 0, -1, 0]; think [10, 10, 20, 0]: std sqrt(200 / 3)
    r = rows[('chrpo_no_ctrl', 'auto')]
    assert r['acc_diff_vs_pair'] == pytest.approx(-0.25) and r['acc_diff_pair_ci95'] == pytest.approx(0.49)
    assert r['think_diff_vs_pair'] == pytest.approx(10.0)
    assert r['think_diff_pair_ci95'] == pytest.approx(1.96 * (200 / 3) ** 0.5 / 2)
    # no partner row at this mode (tokenskip has no 0.6 or POLICY row), and partners carry nothing
    for key in (('sft', '0.6'), ('sft', 'auto'), ('tokenskip', '0.2'), ('chrpo', 'auto')):
        assert 'paired_with' not in rows[key], key


def test_method_table_interleaves_ours_and_the_baseline_per_ratio(tmp_path):
    text = write_report(metrics.summarize(fake_results(), paired_with=PAIRED), str(tmp_path / 'r.md'))
    rows = table(text, '## Ours vs a TokenSkip-style compressor')
    cols = [[c.strip() for c in line.strip('|').split('|')] for line in rows]
    assert [(c[0], c[1].split(' (')[0]) for c in cols] == [
        ('-', 'base model'),
        ('0.2', 'Extra-CoT SFT'), ('0.2', 'Extra-CoT mixed-ratio SFT'), ('0.2', 'TokenSkip-style SFT'),
        ('0.4', 'Extra-CoT SFT'), ('0.4', 'TokenSkip-style SFT')]  # 0.6: no baseline row, not in this table
    sft02, ts02 = cols[1], cols[3]
    assert sft02[2:5] == ['30', '50.0 ± 56.6', '0.30']  # think tokens, accuracy ± CI, ActRatio
    assert sft02[5] == '-25.0 ± 49.0'  # vs base, per question [0, 0, -1, 0]
    assert sft02[6] == '+25.0 ± 49.0'  # vs the baseline, paired
    assert cols[2][6] == '+50.0 ± 56.6'  # sft_ratio - tokenskip: [0, 1, 1, 0], std sqrt(1/3)
    assert ts02[6] == '' and ts02[5] == '-50.0 ± 56.6'
    assert cols[4][6] == '+25.0 ± 49.0'


def test_ablation_table_lists_full_chrpo_then_ablations_with_paired_differences(tmp_path):
    text = write_report(metrics.summarize(fake_results(), paired_with=PAIRED), str(tmp_path / 'r.md'))
    cols = [[c.strip() for c in line.strip('|').split('|')] for line in table(text, '## CHRPO ablations (POLICY mode)')]
    assert [c[0] for c in cols] == ['full CHRPO', 'without R_ctrl', 'without R_mode and R_ctrl']  # no_mode absent
    assert cols[0][1:] == ['40', '75.0 ± 49.0', '0.40', '', '']
    assert cols[1][1:] == ['50', '50.0 ± 56.6', '0.50', '-25.0 ± 49.0', f"+10 ± {1.96 * (200 / 3) ** 0.5 / 2:.1f}"]
    assert cols[2][1:] == ['70', '100.0 ± 0.0', '0.70', '+25.0 ± 49.0', '+30 ± 0.0']


def test_report_without_the_paper_rows_has_no_paper_tables(tmp_path):
    main = {k: v for k, v in fake_results().items() if k[1] in ('base', 'sft', 'chrpo')}
    text = write_report(metrics.summarize(main, paired_with=PAIRED), str(tmp_path / 'r.md'))
    assert '## Ours vs a TokenSkip-style compressor' not in text and '## CHRPO ablations' not in text
    assert text == write_report(metrics.summarize(main), str(tmp_path / 'r2.md'))  # paired_with changes nothing
