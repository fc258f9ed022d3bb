"""CHRPO phase 1 and the question schedule (train_chrpo.py): compute_teacher_budgets with a
scripted sampler (chunking, one call per budget, g* and ref_full_len per question, resume
from a cached file with a torn last line) and step_questions (epochs of permutations,
deterministic in the seed)."""
import json

import pytest

import train_chrpo as tc
from common import read_jsonl

BUDGETS = ['0.2', '0.4', '0.6', '0.8', '1.0']
# per question: correct share per budget (2 samples each) and think tokens per sample (None: unclosed)
SCRIPT = {
    'q0': {'solved': [0, 1, 2, 2, 2], 'think': {'1.0': [30, 20]}},         # g* = 0.4, L = 25
    'q1': {'solved': [2, 2, 2, 2, 2], 'think': {'1.0': [10, 10]}},         # cached before the run
    'q2': {'solved': [0, 0, 0, 1, 2], 'think': {'1.0': [40, 44]}},         # 0.8 has 1 of 2 >= 0.5: g* = 0.8
    'q3': {'solved': [0, 0, 0, 0, 0], 'think': {'1.0': [None, None], '0.6': [14, 9]}},  # all-fail, L = 14
    'q4': {'solved': [2, 0, 2, 2, 2], 'think': {'1.0': [None, 12]}},       # 0.4 fails: g* = 0.6, L = 12
}


@pytest.fixture
def scripted(monkeypatch):
    calls = []

    def sample_and_grade(model, tok, items, mode, n=1, temperature=None, top_p=None, **kw):
        calls.append({'ids': [it['id'] for it in items], 'mode': mode, 'n': n, 'temperature': temperature,
                      'top_p': top_p, 'seed': kw.get('seed')})
        rows = []
        for it in items:
            s = SCRIPT[it['id']]
            n_ok = s['solved'][BUDGETS.index(mode)]
            thinks = s['think'].get(mode, [5, 5])
            for j in range(n):
                ok = j < n_ok
                rows.append({'id': it['id'], 'correct': ok, 'think_tokens': thinks[j],
                             'output': f'<think>\ncot {it["id"]} {mode}\n</think>\n\n\\boxed{{1}}'})
        return rows

    monkeypatch.setattr(tc, 'sample_and_grade', sample_and_grade)  # where compute_teacher_budgets looks it up
    return calls


TEACHER = dict(teacher_chunk=2, teacher_samples=2, teacher_solve_share=0.5, teacher_temperature=0.55,
               teacher_top_p=0.85, max_new_tokens=384, seed=1337, batch_size=None)


def test_teacher_budgets_chunked_resumed_and_summarized(scripted, tmp_path):
    items = [{'id': f'q{i}', 'question': f'Q{i}', 'answer': '1'} for i in range(5)]
    path = tmp_path / 'teacher.jsonl'
    cached = {'id': 'q1', 'question': 'Q1', 'answer': '1', 'g_star': 0.2, 'ref_full_len': 10.0}
    # a cached row, then a row torn by a kill mid-append (q0: must be labelled again)
    path.write_text(json.dumps(cached) + '\n' + '{"id": "q0", "g_st')
    rows = tc.compute_teacher_budgets(None, None, items, str(path), 0, 1, **TEACHER)
    # q1 is not labelled again; the rest in chunks of 2, one sampler call per budget and chunk
    assert [c['ids'] for c in scripted] == [['q0', 'q2']] * 5 + [['q3', 'q4']] * 5
    assert [c['mode'] for c in scripted] == BUDGETS * 2
    assert all(c['n'] == 2 and c['temperature'] == 0.55 and c['top_p'] == 0.85 for c in scripted)
    by_id = {r['id']: r for r in rows}
    assert [r['id'] for r in read_jsonl(str(path))] == ['q1', 'q0', 'q2', 'q3', 'q4']
    assert by_id['q1'] == cached
    assert by_id['q0']['g_star'] == 0.4 and by_id['q0']['ref_full_len'] == 25.0
    assert by_id['q2']['g_star'] == 0.8 and by_id['q2']['ref_full_len'] == 42.0
    assert by_id['q3']['g_star'] is None and by_id['q3']['ref_full_len'] == 14
    assert by_id['q4']['g_star'] == 0.6 and by_id['q4']['ref_full_len'] == 12
    assert by_id['q0']['accuracy'] == {'0.2': 0.0, '0.4': 0.5, '0.6': 1.0, '0.8': 1.0, '1.0': 1.0}
    # a second run finds everything cached and samples nothing
    scripted.clear()
    again = tc.compute_teacher_budgets(None, None, items, str(path), 0, 1, **TEACHER)
    assert scripted == [] and again == rows


def test_a_resumed_teacher_pass_samples_what_an_uninterrupted_one_would(scripted, tmp_path):
    # a chunk's seeds come from the position of its first question, not from how much was left
    # to do, so a pass killed after its first chunk and resumed draws the very same samples
    items = [{'id': f'q{i}', 'question': f'Q{i}', 'answer': '1'} for i in range(5)]
    full = tmp_path / 'full.jsonl'
    tc.compute_teacher_budgets(None, None, items, str(full), 0, 1, **TEACHER)
    uninterrupted = [(c['ids'], c['mode'], c['seed']) for c in scripted]
    assert len({seed for _, _, seed in uninterrupted}) == 15  # every (chunk, budget) its own seed
    killed = tmp_path / 'killed.jsonl'
    killed.write_text(''.join(line + '\n' for line in full.read_text().splitlines()[:2]))  # chunk 1: q0, q1
    scripted.clear()
    rows = tc.compute_teacher_budgets(None, None, items, str(killed), 0, 1, **TEACHER)
    assert [(c['ids'], c['mode'], c['seed']) for c in scripted] == uninterrupted[5:]
    assert rows == read_jsonl(str(full))


def test_step_questions_are_epochs_of_seeded_permutations():
    n, per = 7, 3
    seq = [i for s in range(7) for i in tc.step_questions(n, s, per, run_seed=5)]  # 21 = 3 epochs
    for e in range(3):
        assert sorted(seq[e * n:(e + 1) * n]) == list(range(n))  # every question once per epoch
    assert seq[:n] != seq[n:2 * n]  # a fresh permutation each epoch
    assert tc.step_questions(n, 4, per, run_seed=5) == seq[12:15]  # step s alone gives the same slice
    assert seq != [i for s in range(7) for i in tc.step_questions(n, s, per, run_seed=6)]
    assert seq[:n] != list(range(n))  # shuffled
