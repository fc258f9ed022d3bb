"""evaluate.py wiring with a scripted sampler (no model): the run key follows the settings,
a torn .partial chunk is rewritten and only its questions are sampled again, per-rank
partial files are merged in item order; and the metric edge cases (ActRatio reference
order, the budget "within 0.1" boundary) against hand numbers."""

import pytest

import evaluate
import metrics


class Tok:
    def decode(self, ids):
        return 'prompt ' + ' '.join(map(str, ids))


SETTINGS = {'n': 2, 'temperature': 0.6, 'top_p': 0.9, 'top_k': 0, 'max_new_tokens': 6, 'seed': 3, 'system': ''}


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """evaluate.sample_and_grade replaced by a recorder; rows say which call made them."""
    calls = []

    def sample_and_grade(model, tok, items, mode, n=1, max_new_tokens=None, **kw):
        calls.append([it['id'] for it in items])
        return [{'id': it['id'], 'question': it['question'], 'gold': it['answer'], 'mode': mode, 'sample_index': j,
                 'prompt_ids': [1, 2], 'tokens': [3] * max_new_tokens, 'output': f'call{len(calls)}',
                 'correct': True, 'think_tokens': 4, 'budget': None, 'finish_reason': 'stop', 'latency_s': 0.1}
                for it in items for j in range(n)]

    for k, v in dict(sample_and_grade=sample_and_grade, out_dir=str(tmp_path), chunk_items=2, max_new_tokens=6,
                     is_main=lambda: True).items():
        monkeypatch.setattr(evaluate, k, v)
    return calls


ITEMS = [{'id': f'q{i}', 'question': f'Q{i}', 'answer': str(i)} for i in range(5)]


def run(rank=0, world=1, settings=SETTINGS, items=ITEMS):
    # out_dir and chunk_items as main() passes them from its config (set by the `scripted` fixture)
    return evaluate.evaluate_pair(None, Tok(), 'ckpt', 'm', 'base', 'syn', items, rank, world, settings,
                                  out_dir=evaluate.out_dir, chunk_items=evaluate.chunk_items, batch_size=8)


def check_complete(rows, items=ITEMS, n=2):
    assert [(r['id'], r['sample_index']) for r in rows] == [(it['id'], j) for it in items for j in range(n)]


def test_changed_settings_resample_and_same_settings_reuse(scripted, monkeypatch):
    check_complete(run())
    assert scripted == [['q0', 'q1'], ['q2', 'q3'], ['q4']]
    scripted.clear()
    rows = run()
    assert scripted == [] and all(r['output'].startswith('call') for r in rows)
    longer = dict(SETTINGS, max_new_tokens=9)
    monkeypatch.setattr(evaluate, 'max_new_tokens', 9)  # main() builds settings from these globals
    assert evaluate.run_key('ckpt', 'syn', 'base', ITEMS, longer) != evaluate.run_key('ckpt', 'syn', 'base', ITEMS,
                                                                                       SETTINGS)
    rows = run(settings=longer)
    assert len(scripted) == 3 and all(r['n_tokens'] == 9 for r in rows)  # not the stale 6-token samples
    for key in ('temperature', 'seed', 'n'):
        changed = dict(SETTINGS, **{key: SETTINGS[key] + 1})
        assert evaluate.run_key('ckpt', 'syn', 'base', ITEMS, changed) != evaluate.run_key(
            'ckpt', 'syn', 'base', ITEMS, SETTINGS), key


def partial_path(tmp_path, rank=0, world=1):
    return f"{evaluate.samples_path(str(tmp_path), 'm', 'base', 'syn')}.rank{rank}of{world}.partial"


def saved(qid, j, key, output='old'):
    return {'id': qid, 'sample_index': j, 'run_key': key, 'output': output, 'mode': 'base', 'correct': False}


def test_torn_partial_chunk_is_rewritten_and_only_its_questions_resampled(scripted, tmp_path):
    key = evaluate.run_key('ckpt', 'syn', 'base', ITEMS, SETTINGS)
    part = partial_path(tmp_path)
    # q0 complete (its samples in either order), q1 torn (1 of 2 samples), rows of another run,
    # then a line torn mid-write
    evaluate.write_jsonl(part, [saved('q0', 1, key), saved('q0', 0, key), saved('q1', 0, key),
                                saved('q2', 0, 'stale'), saved('q2', 1, 'stale')])
    with open(part, 'a') as f:
        f.write('{"id": "q1", "sam')
    rows = run()
    assert scripted == [['q1', 'q2'], ['q3', 'q4']]
    check_complete(rows)
    assert [r['output'] for r in rows[:2]] == ['old', 'old']  # q0 kept
    assert [r['output'] for r in rows[2:4]] == ['call1', 'call1']  # q1's torn sample replaced
    assert not (tmp_path / part).exists()


def test_complete_partial_with_torn_last_line_resumes(scripted, tmp_path):
    key = evaluate.run_key('ckpt', 'syn', 'base', ITEMS, SETTINGS)
    part = partial_path(tmp_path)
    evaluate.write_jsonl(part, [saved('q0', 0, key), saved('q0', 1, key)])
    with open(part, 'a') as f:
        f.write('{"id": "q1", "sam')
    check_complete(run())
    assert scripted == [['q1', 'q2'], ['q3', 'q4']]


def test_two_ranks_sample_strided_shards_and_rank0_merges_in_item_order(scripted, monkeypatch, tmp_path):
    monkeypatch.setattr(evaluate, 'is_main', lambda: False)
    assert run(rank=1, world=2) is None
    assert scripted == [['q1', 'q3']]
    assert (tmp_path / partial_path(tmp_path, 1, 2)).exists()
    monkeypatch.setattr(evaluate, 'is_main', lambda: True)
    rows = run(rank=0, world=2)
    assert scripted == [['q1', 'q3'], ['q0', 'q2'], ['q4']]
    check_complete(rows)
    assert [r['output'] for r in rows if r['id'] in ('q1', 'q3')] == ['call1'] * 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.partial')]
    assert evaluate.read_jsonl(evaluate.samples_path(str(tmp_path), 'm', 'base', 'syn')) == rows


def test_missing_rank_output_is_an_error(scripted, tmp_path):
    with pytest.raises(RuntimeError, match='q1'):  # rank 1 never ran
        run(rank=0, world=2)


# -----------------------------------------------------------------------------
# metrics


def S(qid, think, budget=None, correct=True):
    return {'id': qid, 'think_tokens': think, 'correct': correct, 'budget': budget, 'finish_reason': 'stop',
            'tokens': [0] * 5, 'latency_s': 0.1}


def test_act_ratio_prefers_base_model_over_own_full_budget_row():
    res = {('syn', 'base', 'base'): [S('q1', 200), S('q2', 100)],
           ('syn', 'sft', '1.0'): [S('q1', 100, '1.0'), S('q2', 60, '1.0')],
           ('syn', 'sft', '0.4'): [S('q1', 60, '0.4'), S('q2', 30, '0.4')]}
    rows = {(r['model'], r['mode']): r for r in metrics.summarize(res)}
    row = rows[('sft', '0.4')]
    assert row['reference'] == 'base/base'
    assert row['act_ratio'] == pytest.approx(45 / 150)
    # per question against the base row: 60/200 = 0.3 and 30/100 = 0.3, target 0.4: err 0.1 each
    assert row['budget_abs_err'] == pytest.approx(0.1)
    assert rows[('sft', '1.0')]['act_ratio'] == pytest.approx(80 / 150)
    # with another reference model named, that model's base row is used
    res[('syn', 'other', 'base')] = [S('q1', 50), S('q2', 50)]
    rows = {(r['model'], r['mode']): r for r in metrics.summarize(res, reference_model='other')}
    assert rows[('sft', '0.4')]['reference'] == 'other/base'
    assert rows[('sft', '0.4')]['act_ratio'] == pytest.approx(45 / 50)


def test_budget_within_tolerance_boundary_is_inclusive():
    ref = {'q1': 100.0, 'q2': 100.0, 'q3': 100.0}
    # |0.3 - 0.4| = 0.10000000000000003 in floats: on the boundary, inside
    assert metrics.budget_following([S('q1', 30, '0.4')], ref) == (pytest.approx(0.1), 1.0, 1)
    # |0.5 - 0.4| = 0.09999999999999998: inside; |0.29 - 0.4| = 0.11: outside
    err, within, n = metrics.budget_following([S('q1', 50, '0.4'), S('q2', 29, '0.4'), S('q3', 51, '0.4')], ref)
    assert within == pytest.approx(1 / 3) and n == 3 and err == pytest.approx((0.1 + 0.11 + 0.11) / 3)
    # the tolerance is a parameter
    assert metrics.budget_following([S('q1', 35, '0.4')], ref, tol=0.04)[1] == 0.0
