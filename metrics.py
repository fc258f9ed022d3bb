"""
Metrics of graded samples: what evaluate.py reports for each (benchmark, model, mode) row.
`summarize` turns {(benchmark, model, mode): [graded samples]} into summary rows (dicts);
report.py writes them as markdown and the plot. No model, no sampling: everything here is
arithmetic over the rows that evaluate.sample_and_grade wrote, so it is tested against
hand-computed numbers (tests/test_evaluate.py).

Metrics per (benchmark, model, mode), see `summarize`:
  accuracy       mean(correct) over all samples; accuracy_ci95 its 95% half-width over
                 questions (`mean_ci95`); acc_diff_vs_ref / acc_diff_ci95 the accuracy minus
                 the reference row's, paired over the shared questions, and its half-width
  think_tokens   mean think tokens over samples with a closed think
  act_ratio      think_tokens / think_tokens of the reference row. Reference: the 'base'
                 model's 'base' mode on the same benchmark; if absent, the same model's
                 '1.0' row, else its 'base' row (`reference_key`)
  paired         with paired_with {model: other}: acc_diff_vs_pair and think_diff_vs_pair, the
                 row minus the other model's row at the same mode, paired over questions, ± 95%
  budget_abs_err mean |r - target| with r = think tokens / mean think tokens of the same
                 question in the reference row; target = the fixed ratio, or in POLICY
                 mode the chosen budget; budget_within_0.1 = share with |r - target| <= 0.1;
                 on the reference row budget_floor: its own samples, each against the mean
                 of the question's other samples, target 1.0 (`reference_floor`): the error
                 a copy of the reference model would score, set by the length noise of
                 sampling. `reference_samples` draws the reference row more often so that
                 the denominator's share of that noise shrinks
  budget_hist    counts of chosen budgets (POLICY); acc_by_difficulty; latency_s
                 (per question); tokens_per_s; pass@k when n > 1 (unbiased estimator)
"""
import math

from data import FIXED_MODES, budget_name, mode_name, shown_mode


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def think_tokens_by_question(samples):
    """id -> think tokens of its closed-think samples (ids with none are absent)."""
    acc = {}
    for s in samples:
        if s.get('think_tokens') is not None:
            acc.setdefault(str(s['id']), []).append(s['think_tokens'])
    return acc


def per_question_think(samples):
    """id -> mean think tokens of its closed-think samples (ids with none are absent)."""
    return {k: sum(v) / len(v) for k, v in think_tokens_by_question(samples).items()}


def per_question_accuracy(samples):
    """id -> mean correctness over the question's samples."""
    acc = {}
    for s in samples:
        acc.setdefault(str(s['id']), []).append(float(bool(s['correct'])))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def mean_ci95(values):
    """(mean, 95% half-width) of per-question values: 1.96 * sample std / sqrt(Q). Questions are
    the independent units (several samples of one question are not), so with n samples per
    question this is the cluster-robust interval, and for one sample it is the usual binomial
    normal-approximation interval. Half-width None with fewer than 2 questions."""
    q = len(values)
    if q == 0:
        return None, None
    m = sum(values) / q
    if q < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (q - 1)
    return m, 1.96 * math.sqrt(var / q)


def paired_accuracy_difference(samples, ref_samples):
    """Accuracy of `samples` minus accuracy of `ref_samples` over the questions both answered,
    with the 95% half-width of that difference. Paired per question: the two rows share the
    questions, so the question-to-question spread cancels and the interval is far narrower than
    two independent intervals combined (McNemar's setting). Returns (diff, half_width, Q)."""
    a, b = per_question_accuracy(samples), per_question_accuracy(ref_samples)
    common = [k for k in a if k in b]
    diff, hw = mean_ci95([a[k] - b[k] for k in common])
    return diff, hw, len(common)


def paired_comparison(samples, other_samples, other_name):
    """This row minus another model's row at the same mode, paired over the shared questions:
    accuracy and think tokens (questions where both closed their think), each with its 95%
    half-width (the paper's comparisons: ours vs the baseline, an ablation vs full CHRPO)."""
    acc, acc_hw, _ = paired_accuracy_difference(samples, other_samples)
    a, b = per_question_think(samples), per_question_think(other_samples)
    think, think_hw = mean_ci95([a[k] - b[k] for k in a if k in b])
    return {'paired_with': other_name, 'acc_diff_vs_pair': acc, 'acc_diff_pair_ci95': acc_hw,
            'think_diff_vs_pair': think, 'think_diff_pair_ci95': think_hw}


def budget_following(samples, ref_think, tol=0.1):
    """Realized ratio r = think tokens / the same question's reference think tokens, compared
    with the target (the budget the sample ran under). Returns (mean |r - target|, share
    within tol, count); (None, None, 0) when no sample has a target and a reference."""
    errs = []
    for s in samples:
        target = budget_name(s.get('budget'))
        ref = ref_think.get(str(s['id']))
        if target is None or s.get('think_tokens') is None or not ref:
            continue
        errs.append(abs(s['think_tokens'] / ref - float(target)))
    if not errs:
        return None, None, 0
    return sum(errs) / len(errs), sum(e <= tol + 1e-9 for e in errs) / len(errs), len(errs)


def reference_floor(samples):
    """The budget error of the reference row against itself: each sample's r = think tokens /
    mean think tokens of the question's other samples, mean |r - 1| over the samples whose
    question has another. A model that wrote exactly like the reference would score about this
    at ratio 1.0, so it is the floor that sampling noise puts under the fixed-ratio errors.
    Returns (floor, count); (None, 0) with one sample a question."""
    errs = []
    for lens in think_tokens_by_question(samples).values():
        total, n = sum(lens), len(lens)
        for t in lens:  # the others' mean: (total - t) / (n - 1)
            if n > 1 and total > t:
                errs.append(abs(t * (n - 1) / (total - t) - 1.0))
    return (sum(errs) / len(errs), len(errs)) if errs else (None, 0)


def budget_histogram(samples):
    """Counts of chosen budgets ('0.2'..'1.0', 'none' when no budget token came first)."""
    hist = {m: 0 for m in FIXED_MODES}
    for s in samples:
        b = budget_name(s.get('budget'))
        hist[b if b is not None else 'none'] = hist.get(b if b is not None else 'none', 0) + 1
    return hist


def reference_key(keys, bench, model_name, reference_model='base'):
    """The (bench, model, mode) row whose think tokens are the ActRatio denominator."""
    for cand in ((bench, reference_model, 'none'), (bench, model_name, '1.0'), (bench, model_name, 'none')):
        if cand in keys:
            return cand
    return None


def summarize(results, reference_model='base', paired_with=None):
    """results: {(bench, model, mode): [graded samples]} -> list of summary rows (dicts).
    paired_with: {model: other model}: its rows also carry paired_comparison to the other's row
    at the same mode, where that row exists."""
    results = {(b, m, mode_name(md)): v for (b, m, md), v in results.items()}
    think = {k: _mean([s['think_tokens'] for s in v if s.get('think_tokens') is not None])
             for k, v in results.items()}
    rows = []
    for key, samples in results.items():
        bench, model_name, mode = key
        ref = reference_key(results, bench, model_name, reference_model)
        ref_think = think.get(ref) if ref else None
        t = think[key]
        row = {'benchmark': bench, 'model': model_name, 'mode': shown_mode(mode),
               'n': len(samples), 'n_questions': len({str(s['id']) for s in samples}),
               'accuracy': _mean([float(bool(s['correct'])) for s in samples]) or 0.0,
               'think_tokens': t,
               'act_ratio': (t / ref_think) if (t is not None and ref_think) else None,
               'reference': f'{ref[1]}/{shown_mode(ref[2])}' if ref else None,
               'closed_think_rate': _mean([float(s.get('think_tokens') is not None) for s in samples]),
               'truncated_rate': _mean([float(s.get('finish_reason') != 'stop') for s in samples])}
        row['accuracy_ci95'] = mean_ci95(list(per_question_accuracy(samples).values()))[1]
        if ref and ref != key:  # accuracy difference to the reference row, paired over questions
            d, hw, _ = paired_accuracy_difference(samples, results[ref])
            row.update({'acc_diff_vs_ref': d, 'acc_diff_ci95': hw})
        other = (bench, (paired_with or {}).get(model_name), mode)
        if other in results:
            row.update(paired_comparison(samples, results[other], other[1]))
        err, within, cnt = budget_following(samples, per_question_think(results[ref]) if ref else {})
        row.update({'budget_abs_err': err, 'budget_within_0.1': within, 'budget_n': cnt})
        if key == ref:
            row['budget_floor'], row['budget_floor_n'] = reference_floor(samples)
        if mode == 'auto':
            row['budget_hist'] = budget_histogram(samples)
        by_diff = {}
        for s in samples:
            if s.get('difficulty') is not None:
                by_diff.setdefault(str(s['difficulty']), []).append(float(bool(s['correct'])))
        row['acc_by_difficulty'] = {d: sum(v) / len(v) for d, v in sorted(by_diff.items(), key=lambda kv: _num_key(kv[0]))}
        total_latency = sum(s.get('latency_s', 0.0) for s in samples)
        gen_tokens = sum(len(s.get('tokens', ())) for s in samples)
        row['latency_s'] = total_latency / max(row['n_questions'], 1)
        row['tokens_per_s'] = gen_tokens / total_latency if total_latency > 0 else None
        row['gen_tokens'] = gen_tokens / max(len(samples), 1)
        per_q = {}
        for s in samples:
            per_q.setdefault(str(s['id']), []).append(bool(s['correct']))
        ns = {len(v) for v in per_q.values()}
        if len(ns) == 1 and ns.pop() > 1:
            nq = len(next(iter(per_q.values())))
            for k in sorted({1, 2, nq}):  # pass@2 too: rows drawn more often (reference_samples) share a column
                row[f'pass@{k}'] = _mean([pass_at_k(nq, sum(v), k) for v in per_q.values()])
        rows.append(row)
    return rows


def _num_key(s):
    try:
        return (0, float(s), '')
    except ValueError:
        return (1, 0.0, s)
