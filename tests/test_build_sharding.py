"""
build_sft_data.py under torchrun, simulated on CPU with one thread per rank and a
threading.Barrier standing in for dist.barrier (issue 12, finding 9): the ranks answer every
uncached question exactly once between them, each its evaluate.shard and in bounded batches,
the .partial files merge into the cache, and the compression is split the same way.

    python -m pytest tests/test_build_sharding.py -q
"""
import os
import threading

import pytest

import build_sft_data as bs
import evaluate
from common import read_jsonl, write_jsonl

ITEMS = [{'id': f'q{i}', 'question': f'What is {i} plus 1?', 'answer': str(i + 1)} for i in range(10)]


def run_ranks(world, fn):
    """fn(rank) on `world` threads that share one barrier; returns the results by rank."""
    barrier = threading.Barrier(world, timeout=60)
    results, errors = [None] * world, []

    def run(rank):
        try:
            results[rank] = fn(rank, barrier.wait)
        except BaseException as e:  # noqa: BLE001 -- re-raised below, in the test's thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def scripted_sampler(monkeypatch):
    """evaluate.sample_and_grade replaced: records (thread, ids, batch_size), answers n rows each."""
    calls, lock = [], threading.Lock()

    def sample_and_grade(model, tok, items, mode, n=1, batch_size=None, **kw):
        with lock:
            calls.append({'rank': model, 'ids': [it['id'] for it in items], 'batch_size': batch_size, 'mode': mode})
        return [{'id': it['id'], 'question': it['question'], 'gold': it['answer'], 'difficulty': None,
                 'correct': j == 0, 'tokens': [1, 2, j]} for it in items for j in range(n)]

    monkeypatch.setattr(evaluate, 'sample_and_grade', sample_and_grade)
    return calls


def sample_on_ranks(monkeypatch, tmp_path, world, n=2):
    cache = str(tmp_path / 'base_samples.jsonl')
    ckpt = str(tmp_path / 'base')

    def rank_main(rank, wait):
        monkeypatch.setattr(bs, 'barrier', lambda: wait())  # one barrier object shared by the "ranks"
        return bs.sample_base_answers(rank, None, ITEMS, cache, ckpt, n_samples=n, temperature=0.7, top_p=0.9,
                                      max_new_tokens=8, seed=5, batch_size=4, chunk_questions=2, rank=rank,
                                      world=world)
    return run_ranks(world, rank_main), cache, ckpt


@pytest.mark.parametrize('world', [1, 3])
def test_ranks_answer_every_question_exactly_once_in_bounded_batches(scripted_sampler, monkeypatch, tmp_path, world):
    per_rank, cache, ckpt = sample_on_ranks(monkeypatch, tmp_path, world)
    sampled = [q for c in scripted_sampler for q in c['ids']]
    assert sorted(sampled) == sorted(it['id'] for it in ITEMS)  # the pool, each question once
    for rank in range(world):  # each rank its strided share, in chunks of at most 2 questions, 4 rows a batch
        mine = [q for c in scripted_sampler if c['rank'] == rank for q in c['ids']]
        assert mine == [ITEMS[i]['id'] for i in evaluate.shard(len(ITEMS), rank, world)]
    assert all(len(c['ids']) <= 2 and c['batch_size'] == 4 and c['mode'] == 'none' for c in scripted_sampler)
    expected = [(it['id'], j) for it in ITEMS for j in range(2)]
    for rows in per_rank:  # every rank gets every question's rows, in item order
        assert [(r['id'], r['tokens'][2]) for r in rows] == expected
    assert sorted((r['id'], r['tokens'][2]) for r in read_jsonl(cache)) == sorted(expected)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.partial')]
    # a second build (another world size) finds everything cached and samples nothing
    scripted_sampler.clear()
    sample_on_ranks(monkeypatch, tmp_path, 2)
    assert scripted_sampler == []


def test_a_killed_builds_partial_files_are_reused_and_only_the_rest_sampled(scripted_sampler, monkeypatch, tmp_path):
    cache, ckpt = str(tmp_path / 'base_samples.jsonl'), str(tmp_path / 'base')
    row = {'question': 'q', 'gold': '1', 'difficulty': None, 'correct': True, 'tokens': [1], 'base_ckpt': ckpt}
    write_jsonl(cache, [dict(row, id='q0'), dict(row, id='q0')])
    # q4 done, q2 torn (it is rank 1's again: its fresh rows land after the torn one in this file)
    write_jsonl(cache + '.rank1of3.partial', [dict(row, id='q4'), dict(row, id='q4'), dict(row, id='q2')])
    write_jsonl(cache + '.rank0of3.partial', [dict(row, id='q7', base_ckpt='another model')] * 2)
    sample_on_ranks(monkeypatch, tmp_path, 3)
    sampled = sorted(q for c in scripted_sampler for q in c['ids'])
    assert sampled == sorted(it['id'] for it in ITEMS if it['id'] not in ('q0', 'q4'))
    merged = read_jsonl(cache)
    assert sum(r['id'] == 'q4' for r in merged) == 2
    assert [r['tokens'] for r in merged if r['id'] == 'q2'] == [[1, 2, 0], [1, 2, 1]]  # the fresh rows only
    assert sum(r['id'] == 'q7' for r in merged) == 2


def test_compression_is_split_over_the_ranks_and_every_rank_sees_all(monkeypatch, tmp_path):
    cots = {f'q{i}': (f'question {i}', 'gold', f'cot {i}', None) for i in range(7)}
    done, lock = [], threading.Lock()

    def compress_batch(model, tok, pairs, ratios, rtok, batch_size):
        with lock:
            done.extend(cot for _, cot in pairs)
        return [[{'text': cot[:2], 'realized_ratio': r}] for _, cot in pairs for r in ratios[:1]]

    monkeypatch.setattr(bs, 'compress_batch', compress_batch)

    def rank_main(rank, wait):
        monkeypatch.setattr(bs, 'barrier', lambda: wait())
        return bs.compress_cots(None, None, cots, None, [0.5], 4, rank, 3, str(tmp_path / 'comp'))

    per_rank = run_ranks(3, rank_main)
    assert sorted(done) == sorted(c[2] for c in cots.values())  # each CoT compressed once
    assert all(r == {q: [{'text': 'co', 'realized_ratio': 0.5}] for q in cots} for r in per_rank)
    assert os.listdir(tmp_path) == []
