"""
The evaluation report: evaluate.py's summary rows (one per benchmark x model x mode, see
metrics.summarize) written as markdown in the paper's table layout, plus the
accuracy-vs-ActRatio plot. Not run directly: evaluate.py calls

    write_report(summary_rows, 'out/eval/report.md', plot_path='out/eval/accuracy_vs_ratio.png')

Sections: the main table (rows = model / mode, a column per benchmark, each cell "think
tokens / accuracy % ± 95% half-width (ActRatio) [accuracy difference to the reference row ±
its paired half-width]"), budget following, the POLICY budget histogram, accuracy by
difficulty, latency and, when several samples were drawn per question, pass@k.
With the rows of `bash speedrun.sh --paper` (config/eval_paper.py) two more tables follow the
main one, in the layout of the paper's: ours against the TokenSkip-style baseline, one row per
method and ratio, interleaved (`method_table`); and the CHRPO ablations in POLICY mode against
full CHRPO (`ablation_table`). Their paired columns are metrics.paired_comparison's. Without
those rows the report is as before.
"""
import os

from common import atomic_write_text

MODE_LABELS = {'base': 'no budget token', 'auto': 'POLICY'}  # how modes read in the table
BASELINE = 'tokenskip'  # the TokenSkip-style model (tokenskip.py); ours are compared with it at each ratio
METHODS = {'sft': 'Extra-CoT SFT (ours)',  # the rows of the method table, in this order at each ratio
           'sft_ratio': 'Extra-CoT mixed-ratio SFT (ours, before the POLICY warm-up)',
           BASELINE: 'TokenSkip-style SFT (question-agnostic compressor)'}
ABLATIONS = {'chrpo': 'full CHRPO', 'chrpo_no_ctrl': 'without R_ctrl',  # the ablation table's rows, in order
             'chrpo_no_mode': 'without R_mode', 'chrpo_no_both': 'without R_mode and R_ctrl'}


def _row_label(model_name, mode):
    if model_name == 'base' and mode == 'base':
        return 'base model'
    return f"{model_name} {MODE_LABELS.get(mode, mode)}"


def _fmt(x, spec='.2f', none='-'):
    return none if x is None else format(x, spec)


def _acc(r):
    """accuracy % ± its 95% half-width"""
    ci = f" ± {100 * r['accuracy_ci95']:.1f}" if r.get('accuracy_ci95') is not None else ''
    return f"{100 * r['accuracy']:.1f}{ci}"


def _diff(d, hw, scale=100.0, spec='+.1f'):
    """a paired difference ± its 95% half-width ('' when absent)"""
    if d is None:
        return ''
    return format(scale * d, spec) + (f' ± {scale * hw:.1f}' if hw is not None else '')


def _by_benchmark(rows, title):
    """[(heading lines, that benchmark's rows)]: a sub-heading per benchmark only when there are several."""
    benches = list(dict.fromkeys(r.get('benchmark', 'synthetic') for r in rows))
    return [([f'### {title}: {b}', ''] if len(benches) > 1 else [],
             [r for r in rows if r.get('benchmark', 'synthetic') == b]) for b in benches]


def method_table(rows):
    """Ours and the TokenSkip-style baseline at each ratio the baseline was evaluated at, one
    row per method and ratio (METHODS order), after the base model's row. [] without baseline rows."""
    if not any(r['model'] == BASELINE for r in rows):
        return []
    lines = ['', '## Ours vs a TokenSkip-style compressor', '',
             'The TokenSkip-style model and our mixed-ratio SFT share the base model, its own CoTs, the ratios, '
             'buckets, corpus replay and SFT run; only the compressor differs (ours: question-aware, trained on '
             'the annotations; the baseline: question-agnostic surprisal, tokenskip.py). Our SFT is the mixed-ratio '
             'one after the POLICY warm-up round. Accuracy % ± 95% half-width; paired differences over the same '
             'questions in points ± 95% half-width.', '']
    for head, rs in _by_benchmark(rows, 'ours vs TokenSkip-style'):
        cell = {(r['model'], r['mode']): r for r in rs}
        ratios = sorted({r['mode'] for r in rs if r['model'] == BASELINE}, key=float)
        lines += head + ['| ratio | method | think tokens | accuracy % | ActRatio | vs base model '
                         '| vs TokenSkip-style |', '|---|---|---|---|---|---|---|']
        order = [('base', 'base')] + [(m, g) for g in ratios for m in METHODS]
        for m, g in order:
            r = cell.get((m, g))
            if r is None:
                continue
            label = 'base model' if m == 'base' else METHODS[m]
            paired = r.get('paired_with') == BASELINE
            vs = _diff(r.get('acc_diff_vs_pair'), r.get('acc_diff_pair_ci95')) if paired else ''
            lines.append(f"| {'-' if m == 'base' else g} | {label} | {_fmt(r.get('think_tokens'), '.0f')} "
                         f"| {_acc(r)} | {_fmt(r.get('act_ratio'))} "
                         f"| {_diff(r.get('acc_diff_vs_ref'), r.get('acc_diff_ci95'))} | {vs} |")
        lines.append('')
    return lines[:-1]


def ablation_table(rows):
    """Full CHRPO and its ablations in POLICY mode (ABLATIONS order), with the paired accuracy and
    think-token differences to full CHRPO. [] without ablation rows."""
    policy_rows = [r for r in rows if r['mode'] == 'auto' and r['model'] in ABLATIONS]
    if not {r['model'] for r in policy_rows} - {'chrpo'}:
        return []
    lines = ['', '## CHRPO ablations (POLICY mode)', '',
             'The same SFT start, steps and seed; one reward term switched off. Differences to full CHRPO are '
             'paired over the same questions (think tokens: where both closed their think), ± 95% half-width.', '']
    for head, rs in _by_benchmark(policy_rows, 'ablations'):
        cell = {r['model']: r for r in rs}
        lines += head + ['| variant | think tokens | accuracy % | ActRatio | accuracy vs full (points) '
                         '| think tokens vs full |', '|---|---|---|---|---|---|']
        for m, label in ABLATIONS.items():
            r = cell.get(m)
            if r is None:
                continue
            paired = r.get('paired_with') == 'chrpo'
            acc = _diff(r.get('acc_diff_vs_pair'), r.get('acc_diff_pair_ci95')) if paired else ''
            think = _diff(r.get('think_diff_vs_pair'), r.get('think_diff_pair_ci95'), 1.0, '+.0f') if paired else ''
            lines.append(f"| {label} | {_fmt(r.get('think_tokens'), '.0f')} | {_acc(r)} | {_fmt(r.get('act_ratio'))} "
                         f"| {acc} | {think} |")
        lines.append('')
    return lines[:-1]


def write_report(summary_rows, out_path, title='Extra-CoT evaluation', plot_path=None):
    """Markdown report from summary rows: the main table (rows = model/mode, a column per
    benchmark: "think tokens / accuracy % (ActRatio)"), budget following, POLICY budget
    histogram, latency. With plot_path, also the accuracy-vs-ActRatio plot (if matplotlib)."""
    rows = list(summary_rows)
    benches = list(dict.fromkeys(r.get('benchmark', 'synthetic') for r in rows))
    pairs = list(dict.fromkeys((r['model'], r['mode']) for r in rows))
    cell = {(r.get('benchmark', 'synthetic'), r['model'], r['mode']): r for r in rows}
    lines = [f'# {title}', '', 'think tokens / accuracy % ± 95% half-width (ActRatio) [accuracy difference to the '
             'reference row ± its paired 95% half-width, points]; think tokens are counted inside a closed '
             '`<think>..</think>` only; truncated or unboxed answers count as wrong.', '']
    lines += ['| method / mode | ' + ' | '.join(benches) + ' |', '|---|' + '---|' * len(benches)]
    for m, md in pairs:
        cells = []
        for b in benches:
            r = cell.get((b, m, md))
            if r is None:
                cells.append('-')
                continue
            ratio = f" ({r['act_ratio']:.2f})" if r.get('act_ratio') is not None else ''
            diff = _diff(r.get('acc_diff_vs_ref'), r.get('acc_diff_ci95'))
            cells.append(f"{_fmt(r.get('think_tokens'), '.0f')} / {_acc(r)}{ratio}{f' [{diff}]' if diff else ''}")
        lines.append(f'| {_row_label(m, md)} | ' + ' | '.join(cells) + ' |')
    lines += method_table(rows) + ablation_table(rows)  # the --paper rows, when present
    # budget following
    bf = [r for r in rows if r.get('budget_n')]
    if bf:
        lines += ['', '## Budget following', '',
                  'realized ratio r = think tokens / the same question\'s think tokens in the reference row; '
                  'target = the fixed ratio, or the chosen budget in POLICY mode.', '',
                  '| benchmark | method / mode | reference | mean abs(r - target) | within 0.1 | samples |',
                  '|---|---|---|---|---|---|']
        for r in bf:
            lines.append(f"| {r.get('benchmark', 'synthetic')} | {_row_label(r['model'], r['mode'])} | {r.get('reference')} "
                         f"| {_fmt(r['budget_abs_err'], '.3f')} | {_fmt(100 * r['budget_within_0.1'], '.1f')}% "
                         f"| {r['budget_n']} |")
        for r in rows:  # what sampling noise alone scores: the reference row against itself
            if r.get('budget_floor') is not None:
                lines += ['', f"Floor ({r.get('benchmark', 'synthetic')}): the reference row's own samples, each "
                          f"against the mean of its question's other samples, score mean abs(r - 1) = "
                          f"{r['budget_floor']:.3f} ({r['budget_floor_n']} samples); a model that wrote exactly "
                          f"like the reference would score about this at ratio 1.0."]
    # POLICY histogram
    pol = [r for r in rows if r.get('budget_hist')]
    if pol:
        keys = list(dict.fromkeys(k for r in pol for k in r['budget_hist']))
        lines += ['', '## POLICY mode: chosen budgets', '', '| benchmark | model | ' + ' | '.join(keys) + ' |',
                  '|---|---|' + '---|' * len(keys)]
        for r in pol:
            tot = max(sum(r['budget_hist'].values()), 1)
            lines.append(f"| {r.get('benchmark', 'synthetic')} | {r['model']} | "
                         + ' | '.join(f"{r['budget_hist'].get(k, 0)} ({100 * r['budget_hist'].get(k, 0) / tot:.0f}%)"
                                      for k in keys) + ' |')
    # accuracy by difficulty
    diffs = list(dict.fromkeys(d for r in rows for d in (r.get('acc_by_difficulty') or {})))
    if diffs:
        lines += ['', '## Accuracy % by difficulty', '', '| benchmark | method / mode | ' + ' | '.join(diffs) + ' |',
                  '|---|---|' + '---|' * len(diffs)]
        for r in rows:
            d = r.get('acc_by_difficulty') or {}
            lines.append(f"| {r.get('benchmark', 'synthetic')} | {_row_label(r['model'], r['mode'])} | "
                         + ' | '.join(_fmt(100 * d[k], '.1f') if k in d else '-' for k in diffs) + ' |')
    # latency
    lines += ['', '## Latency', '', '| benchmark | method / mode | s / question | tokens / s | generated tokens / sample |',
              '|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r.get('benchmark', 'synthetic')} | {_row_label(r['model'], r['mode'])} | "
                     f"{_fmt(r.get('latency_s'), '.3f')} | {_fmt(r.get('tokens_per_s'), '.1f')} | "
                     f"{_fmt(r.get('gen_tokens'), '.1f')} |")
    if any(k.startswith('pass@') for r in rows for k in r):
        ks = sorted({k for r in rows for k in r if k.startswith('pass@')}, key=lambda k: int(k[5:]))
        lines += ['', '## pass@k %', '', '| benchmark | method / mode | ' + ' | '.join(ks) + ' |',
                  '|---|---|' + '---|' * len(ks)]
        for r in rows:
            lines.append(f"| {r.get('benchmark', 'synthetic')} | {_row_label(r['model'], r['mode'])} | "
                         + ' | '.join(_fmt(100 * r[k], '.1f') if r.get(k) is not None else '-' for k in ks) + ' |')
    if plot_path and write_plot(rows, plot_path):
        lines += ['', f'![accuracy vs ActRatio]({os.path.basename(plot_path)})']
    text = '\n'.join(lines) + '\n'
    atomic_write_text(out_path, text)
    return text


def write_plot(summary_rows, path):
    """Accuracy against ActRatio, one panel per benchmark, one series per model, points
    labelled by mode. Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    benches = list(dict.fromkeys(r.get('benchmark', 'synthetic') for r in summary_rows))
    fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 4), squeeze=False)
    for ax, b in zip(axes[0], benches):
        pts = [r for r in summary_rows if r.get('benchmark', 'synthetic') == b and r.get('act_ratio') is not None]
        for m in dict.fromkeys(r['model'] for r in pts):
            mp = sorted([r for r in pts if r['model'] == m], key=lambda r: r['act_ratio'])
            line = [r for r in mp if r['mode'] != 'auto']  # fixed budgets (and base) as a curve
            err = lambda rs: [100 * (r.get('accuracy_ci95') or 0.0) for r in rs]  # 95% half-widths
            color = ax.errorbar([r['act_ratio'] for r in line], [100 * r['accuracy'] for r in line], yerr=err(line),
                                fmt='o-', capsize=3, label=m)[0].get_color() if line else None
            for r in mp:  # POLICY is one operating point: a star in the model's color
                if r['mode'] == 'auto':
                    ax.errorbar([r['act_ratio']], [100 * r['accuracy']], yerr=err([r]), fmt='*', ms=12, capsize=3,
                                color=color, label=None if line else m)
            for r in mp:
                ax.annotate(MODE_LABELS.get(r['mode'], r['mode']) if r['mode'] != 'base' else 'base',
                            (r['act_ratio'], 100 * r['accuracy']), fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_title(b)
        ax.set_xlabel('ActRatio (think tokens / base think tokens)')
        ax.set_ylabel('accuracy %')
        ax.grid(alpha=0.3)
        if pts:
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True
