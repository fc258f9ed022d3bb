"""
Tests for evaluate.py: grading of hand-made outputs, the engine's row layout (with a
scripted sampler), the metrics against hand-computed numbers, the report (report.py), and an
end-to-end CLI run on a random tiny model (summary.json, report.md, plot, resume).

    python -m pytest tests/test_evaluate.py -q
"""
import json
import os

import pytest
import torch

import data
import evaluate
import metrics
from common import save_checkpoint, write_jsonl
from corpus import generate_corpus, tokenizer_training_texts
from model import Qwen3, Qwen3Config
from report import write_report
from tokenizer import train_tokenizer


@pytest.fixture(scope='module')
def corpus_and_tok():
    corpus = generate_corpus({'train': 200, 'test': 6}, seed=7)
    tok = train_tokenizer(tokenizer_training_texts(corpus['train']), vocab_size=400)
    return corpus, tok


def completion(tok, think, answer, mirror=None, closed=True, stop=True):
    """Generated ids as a model would write them; returns (ids, number of think ids)."""
    ids = tok.encode(data.BUDGET_TOKENS[mirror]) if mirror else []
    ids += tok.encode('\n<think>')
    body = tok.encode('\n' + think + '\n')
    ids += body
    if closed:
        ids += tok.encode('</think>\n\n' + answer)
    if stop:
        ids += [tok.eos_id]
    return ids, len(body)


# -----------------------------------------------------------------------------
# grading


def test_grade_correct_boxed_answer_is_right_and_counts_think_tokens(corpus_and_tok):
    _, tok = corpus_and_tok
    ids, n_think = completion(tok, 'Mia has 12 apples. 12 + 7 = 19.', 'The answer is \\boxed{19}.')
    g = evaluate.grade(tok, ids, 'stop', '19', '0.4')
    assert g['correct'] is True
    assert g['pred'] == '19'
    assert g['think_tokens'] == n_think
    assert g['budget'] == '0.4'


def test_grade_wrong_value_is_wrong(corpus_and_tok):
    _, tok = corpus_and_tok
    ids, _ = completion(tok, '12 + 7 = 18.', 'The answer is \\boxed{18}.')
    assert evaluate.grade(tok, ids, 'stop', '19', 'base')['correct'] is False


def test_grade_truncated_output_is_wrong_even_with_right_box(corpus_and_tok):
    _, tok = corpus_and_tok
    ids, n_think = completion(tok, '12 + 7 = 19.', 'The answer is \\boxed{19}.', stop=False)
    g = evaluate.grade(tok, ids, 'length', '19', 'base')
    assert g['correct'] is False and g['pred'] == '19' and g['think_tokens'] == n_think


def test_grade_unclosed_think_is_wrong_and_has_no_think_count(corpus_and_tok):
    _, tok = corpus_and_tok
    ids = tok.encode('\n<think>\nthe answer is \\boxed{19}') + [tok.eos_id]
    g = evaluate.grade(tok, ids, 'stop', '19', 'base')
    assert g['correct'] is False and g['think_tokens'] is None


def test_grade_unboxed_answer_is_wrong(corpus_and_tok):
    _, tok = corpus_and_tok
    ids, _ = completion(tok, '12 + 7 = 19.', 'The answer is 19.')
    g = evaluate.grade(tok, ids, 'stop', '19', 'base')
    assert g['boxed'] is False and g['correct'] is False


def test_grade_policy_budget_is_first_generated_token(corpus_and_tok):
    _, tok = corpus_and_tok
    ids, _ = completion(tok, '12 + 7 = 19.', 'The answer is \\boxed{19}.', mirror='0.6')
    g = evaluate.grade(tok, ids, 'stop', '19', 'auto')
    assert g['budget'] == '0.6' and g['correct'] is True
    no_token, _ = completion(tok, '12 + 7 = 19.', 'The answer is \\boxed{19}.')
    assert evaluate.grade(tok, no_token, 'stop', '19', 'auto')['budget'] is None
    assert evaluate.grade(tok, no_token, 'stop', '19', 'none')['budget'] is None


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match='0.3'):
        data.mode_name('0.3')  # evaluate's modes are data.mode_name's (one normalization)
    assert data.mode_name('base') == 'none' and data.mode_name(0.4) == '0.4'


# -----------------------------------------------------------------------------
# the engine with a scripted sampler (independent of sampler.py's randomness)


def test_sample_and_grade_rows_in_item_order_with_prompts_and_grades(corpus_and_tok, monkeypatch):
    _, tok = corpus_and_tok
    items = [{'id': 'a', 'question': 'Q one?', 'answer': '19', 'difficulty': 1},
             {'id': 'b', 'question': 'Q two?', 'answer': '5'}]
    right, _ = completion(tok, 'x', 'The answer is \\boxed{19}.', mirror='0.2')
    wrong, _ = completion(tok, 'y', 'The answer is \\boxed{4}.', mirror='1.0')
    calls = {}

    def fake_generate(model, prompts, n=1, stop_token_ids=(), **kw):
        calls.update(prompts=prompts, n=n, stop=stop_token_ids, kw=kw)
        out = []
        for p in range(len(prompts)):
            for j in range(n):
                toks = right if (p, j) == (0, 1) else wrong
                out.append({'prompt_index': p, 'tokens': toks, 'logprobs': [-0.5] * len(toks),
                            'finish_reason': 'stop'})
        return out

    monkeypatch.setattr(evaluate.sampler, 'generate', fake_generate)
    model = torch.nn.Linear(1, 1)
    rows = evaluate.sample_and_grade(model, tok, items, 'auto', n=2, temperature=0.5, seed=3)
    assert [(r['id'], r['sample_index']) for r in rows] == [('a', 0), ('a', 1), ('b', 0), ('b', 1)]
    assert [r['correct'] for r in rows] == [False, True, False, False]
    assert [r['budget'] for r in rows] == ['1.0', '0.2', '1.0', '1.0']
    assert rows[0]['prompt_ids'] == tok.encode(data.render_prompt('Q one?', 'auto'))
    assert calls['prompts'][1] == tok.encode(data.render_prompt('Q two?', 'auto'))
    assert calls['n'] == 2 and list(calls['stop']) == list(tok.stop_ids) and calls['kw']['temperature'] == 0.5
    assert rows[0]['difficulty'] == 1 and rows[2]['difficulty'] is None and rows[0]['gold'] == '19'
    assert all(r['latency_s'] >= 0 for r in rows)
    base_rows = evaluate.sample_and_grade(model, tok, items[:1], 'base', n=1)
    assert base_rows[0]['mode'] == 'none' and base_rows[0]['budget'] is None
    assert base_rows[0]['prompt_ids'] == tok.encode(data.render_prompt('Q one?', 'none'))


# -----------------------------------------------------------------------------
# metrics on hand-made samples


def S(qid, think, correct, budget=None, difficulty=None, finish='stop', n_tokens=10):
    return {'id': qid, 'think_tokens': think, 'correct': correct, 'budget': budget, 'difficulty': difficulty,
            'finish_reason': finish, 'tokens': [0] * n_tokens, 'latency_s': 0.5}


def hand_results():
    return {
        ('syn', 'base', 'base'): [S('q1', 100, True, difficulty=1), S('q2', 200, False, difficulty=2)],
        ('syn', 'sft', '0.2'): [S('q1', 20, True, '0.2', 1), S('q2', 70, True, '0.2', 2)],
        ('syn', 'sft', 'auto'): [S('q1', 30, True, '0.2', 1), S('q2', 120, False, '0.6', 2),
                                 S('q3', None, False, None, 3, finish='length')],
    }


def rows_by_key(rows):
    return {(r['model'], r['mode']): r for r in rows}


def test_summary_accuracy_think_tokens_and_act_ratio_match_hand_numbers():
    rows = rows_by_key(metrics.summarize(hand_results()))
    base, fixed, auto = rows[('base', 'base')], rows[('sft', '0.2')], rows[('sft', 'auto')]
    assert base['accuracy'] == 0.5 and base['think_tokens'] == 150 and base['act_ratio'] == 1.0
    assert fixed['accuracy'] == 1.0 and fixed['think_tokens'] == 45
    assert fixed['act_ratio'] == pytest.approx(45 / 150)
    # unclosed think (q3) is out of the mean but in the accuracy denominator
    assert auto['accuracy'] == pytest.approx(1 / 3) and auto['think_tokens'] == 75
    assert auto['act_ratio'] == pytest.approx(0.5) and auto['reference'] == 'base/base'
    assert auto['truncated_rate'] == pytest.approx(1 / 3) and auto['n'] == 3


def test_budget_following_uses_same_question_reference():
    rows = rows_by_key(metrics.summarize(hand_results()))
    # 0.2 mode: r = 20/100 = 0.2 (err 0), 70/200 = 0.35 (err 0.15)
    fixed = rows[('sft', '0.2')]
    assert fixed['budget_abs_err'] == pytest.approx(0.075) and fixed['budget_within_0.1'] == 0.5
    assert fixed['budget_n'] == 2
    # POLICY: target = chosen budget; q1 r=0.3 vs 0.2 (err 0.1, inside), q2 r=0.6 vs 0.6; q3 skipped
    auto = rows[('sft', 'auto')]
    assert auto['budget_abs_err'] == pytest.approx(0.05) and auto['budget_within_0.1'] == 1.0
    assert auto['budget_n'] == 2
    assert rows[('base', 'base')]['budget_n'] == 0 and rows[('base', 'base')]['budget_abs_err'] is None


def test_policy_budget_histogram_counts_chosen_budgets():
    auto = rows_by_key(metrics.summarize(hand_results()))[('sft', 'auto')]
    assert auto['budget_hist'] == {'0.2': 1, '0.4': 0, '0.6': 1, '0.8': 0, '1.0': 0, 'none': 1}
    assert 'budget_hist' not in rows_by_key(metrics.summarize(hand_results()))[('sft', '0.2')]


def test_accuracy_by_difficulty_and_latency():
    rows = rows_by_key(metrics.summarize(hand_results()))
    assert rows[('sft', 'auto')]['acc_by_difficulty'] == {'1': 1.0, '2': 0.0, '3': 0.0}
    assert rows[('base', 'base')]['acc_by_difficulty'] == {'1': 1.0, '2': 0.0}
    assert rows[('sft', 'auto')]['latency_s'] == pytest.approx(0.5)  # 3 x 0.5 s over 3 questions
    assert rows[('sft', 'auto')]['tokens_per_s'] == pytest.approx(30 / 1.5)


def test_act_ratio_falls_back_to_same_models_full_budget_row():
    res = {('syn', 'sft', '1.0'): [S('q1', 100, True, '1.0')], ('syn', 'sft', '0.4'): [S('q1', 40, True, '0.4')]}
    rows = rows_by_key(metrics.summarize(res))
    assert rows[('sft', '0.4')]['act_ratio'] == pytest.approx(0.4) and rows[('sft', '0.4')]['reference'] == 'sft/1.0'
    assert rows[('sft', '0.4')]['budget_abs_err'] == pytest.approx(0.0)


def test_pass_at_k_matches_combinatorial_definition():
    assert metrics.pass_at_k(4, 0, 2) == 0.0
    assert metrics.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert metrics.pass_at_k(4, 3, 2) == 1.0
    res = {('syn', 'm', '1.0'): [S('q1', 10, True, '1.0'), S('q1', 10, False, '1.0'),
                                 S('q2', 10, False, '1.0'), S('q2', 10, False, '1.0')]}
    row = metrics.summarize(res)[0]
    assert row['pass@1'] == pytest.approx(0.25) and row['pass@2'] == pytest.approx(0.5)
    assert 'pass@1' not in rows_by_key(metrics.summarize(hand_results()))[('sft', '0.2')]


def test_write_report_has_paper_layout_cells(tmp_path):
    rows = metrics.summarize(hand_results())
    text = write_report(rows, str(tmp_path / 'r.md'))
    assert (tmp_path / 'r.md').read_text() == text
    assert '| method / mode | syn |' in text
    assert '| base model | 150 / 50.0 ± 98.0 (1.00) |' in text  # 2 questions [1, 0]: 1.96 * sqrt(0.5 / 2)
    assert '| sft 0.2 | 45 / 100.0 ± 0.0 (0.30) [+50.0 ± 98.0] |' in text
    assert '| sft POLICY | 75 / 33.3 ± 65.3 (0.50) [+0.0 ± 0.0] |' in text
    assert '## Budget following' in text and '## POLICY mode: chosen budgets' in text
    assert '| syn | sft | 1 (33%) | 0 (0%) | 1 (33%) |' in text


# -----------------------------------------------------------------------------
# end to end: random tiny models, the CLI main(), resume


def tiny_checkpoint(out_dir, tok, seed):
    cfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                      torch_dtype='float32')
    model = Qwen3(cfg)
    model.init_weights(seed)
    return save_checkpoint(str(out_dir), model, tok)


def configure(monkeypatch, tmp_path, bench, models, model_modes, **extra):
    settings = dict(out_dir=str(tmp_path / 'eval'), models=models, model_modes=model_modes, benchmarks=[bench],
                    max_new_tokens=6, batch_size=8, chunk_items=2, device='cpu', param_dtype='float32', n_samples=1,
                    report_path=str(tmp_path / 'report.md'), optional_models=[], max_items=0)
    settings.update(extra)
    for k, v in settings.items():
        monkeypatch.setattr(evaluate, k, v)


def test_end_to_end_writes_samples_summary_report_and_resumes(corpus_and_tok, tmp_path, monkeypatch):
    corpus, tok = corpus_and_tok
    bench = str(tmp_path / 'bench.jsonl')
    write_jsonl(bench, [{'id': r['id'], 'question': r['question'], 'answer': r['answer']}
                             for r in corpus['test'][:3]])
    models = {'base': tiny_checkpoint(tmp_path / 'base', tok, 1), 'sft': str(tmp_path / 'sft'),
              'chrpo': str(tmp_path / 'chrpo')}
    tiny_checkpoint(tmp_path / 'sft', tok, 2)  # an out_dir: resolved to its ckpt/
    modes = {'base': ['base'], 'sft': ['0.2', 'auto'], 'chrpo': ['auto']}
    configure(monkeypatch, tmp_path, bench, models, modes)
    with pytest.raises(SystemExit, match='chrpo'):  # missing checkpoint, not optional
        evaluate.main()
    configure(monkeypatch, tmp_path, bench, models, modes, optional_models=['chrpo'])
    evaluate.main()
    out = tmp_path / 'eval'
    summary = json.loads((out / 'summary.json').read_text())
    assert {(r['model'], r['mode']) for r in summary} == {('base', 'base'), ('sft', '0.2'), ('sft', 'auto')}
    for r in summary:
        for k in ('model', 'mode', 'accuracy', 'think_tokens', 'act_ratio', 'n', 'latency_s', 'budget_abs_err'):
            assert k in r
        assert r['n'] == 3 and 0.0 <= r['accuracy'] <= 1.0
    samples = evaluate.read_jsonl(evaluate.samples_path(str(out), 'sft', 'auto', bench))
    assert [s['id'] for s in samples] == [r['id'] for r in corpus['test'][:3]]
    assert all(k in samples[0] for k in ('prompt', 'output', 'pred', 'correct', 'think_tokens', 'budget'))
    assert not [f for f in os.listdir(out) if f.endswith('.partial')]
    report = (out / 'report.md').read_text()
    assert '| base model |' in report and '| sft POLICY |' in report
    assert (tmp_path / 'report.md').exists()
    try:
        import matplotlib  # noqa: F401
        assert (out / 'accuracy_vs_ratio.png').stat().st_size > 0
    except ImportError:
        pass
    # a re-run reuses every finished (model, mode): no sampling at all
    real = evaluate.sample_and_grade
    monkeypatch.setattr(evaluate, 'sample_and_grade', lambda *a, **k: pytest.fail('re-sampled a finished pair'))
    evaluate.main()
    assert json.loads((out / 'summary.json').read_text()) == summary
    # base retrained in place (other weights, same path): its pair is sampled again, the others reused
    tiny_checkpoint(tmp_path / 'base', tok, 3)
    sampled = []
    monkeypatch.setattr(evaluate, 'sample_and_grade', lambda m, t, items, mode, *a, **k: sampled.append(mode)
                        or real(m, t, items, mode, *a, **k))
    evaluate.main()
    assert sampled and set(sampled) == {'base'}  # its chunks only; sft's two pairs came from their files


def test_killed_run_resumes_from_partial_file(corpus_and_tok, tmp_path, monkeypatch):
    corpus, tok = corpus_and_tok
    bench = str(tmp_path / 'bench.jsonl')
    write_jsonl(bench, [{'id': r['id'], 'question': r['question'], 'answer': r['answer']}
                             for r in corpus['test'][:4]])
    models = {'base': tiny_checkpoint(tmp_path / 'base', tok, 1)}
    configure(monkeypatch, tmp_path, bench, models, {'base': ['base']}, chunk_items=2)
    real = evaluate.sample_and_grade
    seen = []

    def dies_on_second_chunk(model, tok_, items, *a, **k):
        seen.append([it['id'] for it in items])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(model, tok_, items, *a, **k)

    monkeypatch.setattr(evaluate, 'sample_and_grade', dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main()
    seen.clear()
    monkeypatch.setattr(evaluate, 'sample_and_grade', lambda m, t, items, *a, **k: seen.append(
        [it['id'] for it in items]) or real(m, t, items, *a, **k))
    evaluate.main()
    assert seen == [[r['id'] for r in corpus['test'][2:4]]]  # only the unfinished chunk
    path = evaluate.samples_path(str(tmp_path / 'eval'), 'base', 'base', bench)
    assert [s['id'] for s in evaluate.read_jsonl(path)] == [r['id'] for r in corpus['test'][:4]]


def test_accuracy_intervals_match_hand_computed_binomial_and_paired_values():
    # 4 questions, one sample each: a = [1, 1, 0, 1], reference b = [1, 0, 0, 0]
    a = [{'id': i, 'correct': c} for i, c in enumerate([1, 1, 0, 1])]
    b = [{'id': i, 'correct': c} for i, c in enumerate([1, 0, 0, 0])]
    m, hw = metrics.mean_ci95(list(metrics.per_question_accuracy(a).values()))
    # sample variance of [1,1,0,1]: mean 0.75, sum sq dev 0.75, / 3 = 0.25 -> se = sqrt(0.25/4) = 0.25
    assert m == 0.75 and abs(hw - 1.96 * 0.25) < 1e-12
    d, dhw, q = metrics.paired_accuracy_difference(a, b)
    # per-question differences [0, 1, 0, 1]: mean 0.5, sample var 1/3 -> se = sqrt(1/12)
    assert q == 4 and d == 0.5 and abs(dhw - 1.96 * (1 / 12) ** 0.5) < 1e-12
    # several samples per question: the question (not the sample) is the unit
    two = [{'id': i // 2, 'correct': c} for i, c in enumerate([1, 0, 1, 1, 0, 0])]
    m2, hw2 = metrics.mean_ci95(list(metrics.per_question_accuracy(two).values()))
    vals = [0.5, 1.0, 0.0]
    var = sum((v - 0.5) ** 2 for v in vals) / 2
    assert m2 == 0.5 and abs(hw2 - 1.96 * (var / 3) ** 0.5) < 1e-12


def test_summary_rows_carry_intervals_and_report_prints_them(tmp_path):
    base = [{'id': i, 'correct': i % 2 == 0, 'think_tokens': 100, 'finish_reason': 'stop', 'budget': None}
            for i in range(10)]
    sft = [{'id': i, 'correct': i % 5 != 0, 'think_tokens': 40, 'finish_reason': 'stop', 'budget': 0.4}
           for i in range(10)]
    rows = metrics.summarize({('synthetic', 'base', 'none'): base, ('synthetic', 'sft', '0.4'): sft})
    by = {(r['model'], r['mode']): r for r in rows}
    assert 'acc_diff_vs_ref' not in by[('base', 'base')]
    r = by[('sft', '0.4')]
    assert abs(r['acc_diff_vs_ref'] - (0.8 - 0.5)) < 1e-12 and r['acc_diff_ci95'] > 0
    text = write_report(rows, str(tmp_path / 'report.md'))
    assert f"40 / 80.0 ± {100 * r['accuracy_ci95']:.1f} (0.40) [+30.0 ± {100 * r['acc_diff_ci95']:.1f}]" in text


# -----------------------------------------------------------------------------
# the decode batch from the memory plan (issue 12, finding 8)


def plan_total(plan):
    return sum(r['bytes'] for r in plan['evaluation'])


def test_decode_batch_is_the_largest_whose_memory_plan_fits():
    import memplan
    cfg = Qwen3Config(**memplan.KNOWN_SHAPES['Qwen3-1.7B'])
    gpu = 79.2 * memplan.GiB
    args = (512, 4096, 0.9, 'bfloat16', 1)  # prompt_len, max_new_tokens, top_p, dtype, n_samples
    rows, plan = evaluate.fit_batch_size(cfg, 256, *args, gpu)
    assert 1 < rows < 256 and plan_total(plan) <= gpu  # 256 rows x 4608 tokens do not fit 80 GB
    assert plan_total(memplan.eval_plan(cfg, rows + 1, *args)) > gpu
    kv_per_row = 2 * 28 * 8 * 128 * 2 * (512 + 4096)  # k and v, layers, kv heads, head dim, bf16, tokens
    assert [r['bytes'] for r in plan['evaluation'] if r['what'].startswith('KV cache')] == [rows * kv_per_row]
    small, plan = evaluate.fit_batch_size(cfg, 256, *args, gpu, kv_cache_gib=8)  # a KV budget of its own
    assert small * kv_per_row <= 8 * memplan.GiB < (small + 1) * kv_per_row
    assert evaluate.fit_batch_size(cfg, 256, *args, None)[0] == 256  # CPU: no device to fit
    assert evaluate.fit_batch_size(cfg, 64, *args, gpu)[0] == 64  # never more than asked for
    rows, plan = evaluate.fit_batch_size(cfg, 256, *args, 3 * memplan.GiB)  # not even the weights fit
    assert rows == 1
    with pytest.raises(MemoryError, match='batch_size, max_new_tokens'):
        memplan.check(plan, 3 * memplan.GiB, 'evaluate', print_fn=lambda *a: None)


def test_main_decodes_as_many_rows_at_once_as_the_kv_budget_allows(corpus_and_tok, tmp_path, monkeypatch):
    corpus, tok = corpus_and_tok
    bench = str(tmp_path / 'bench.jsonl')
    write_jsonl(bench, [{'id': r['id'], 'question': r['question'], 'answer': r['answer']} for r in corpus['test'][:6]])
    ckpt = tiny_checkpoint(tmp_path / 'base', tok, 1)
    cfg = Qwen3.from_pretrained(ckpt).config
    prompt_len = max(len(p) for p in evaluate.build_prompts(tok, evaluate.load_benchmark(bench), 'none'))
    row_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 * (prompt_len + 6)  # fp32
    configure(monkeypatch, tmp_path, bench, {'base': ckpt}, {'base': ['base']}, chunk_items=6, batch_size=8,
              kv_cache_gib=3.5 * row_bytes / 2**30)  # room for 3 rows' caches
    seen = []
    real = evaluate.sampler.generate
    monkeypatch.setattr(evaluate.sampler, 'generate', lambda *a, **k: seen.append(k['batch_size']) or real(*a, **k))
    evaluate.main()
    assert seen == [3]


def test_reference_floor_is_each_sample_against_the_mean_of_its_questions_other_samples(tmp_path):
    samples = [S('q1', 100, True), S('q1', 120, True), S('q2', 200, True), S('q2', 150, False),
               S('q2', 250, True), S('q3', 90, True), S('q4', None, False, finish='length'), S('q4', 80, True)]
    # q1: |100/120 - 1|, |120/100 - 1|; q2: |200/200 - 1|, |150/225 - 1|, |250/175 - 1|; q3, q4 have no other
    hand = [1 / 6, 0.2, 0.0, 1 / 3, 250 / 175 - 1]
    floor, count = metrics.reference_floor(samples)
    assert count == 5 and floor == pytest.approx(sum(hand) / 5)
    assert metrics.reference_floor([S('q1', 100, True), S('q2', 50, True)]) == (None, 0)
    res = {**hand_results(), ('syn', 'base', 'base'): samples}
    rows = rows_by_key(metrics.summarize(res))
    assert rows[('base', 'base')]['budget_floor'] == pytest.approx(floor)
    assert 'budget_floor' not in rows[('sft', '0.2')]  # only the reference row measures the floor
    report = write_report(metrics.summarize(res), str(tmp_path / 'report.md'))
    assert f'mean abs(r - 1) = {floor:.3f} (5 samples)' in report


def test_reference_model_is_sampled_reference_samples_times_a_question_and_the_others_n_samples(
        corpus_and_tok, tmp_path, monkeypatch):
    corpus, tok = corpus_and_tok
    bench = str(tmp_path / 'bench.jsonl')
    write_jsonl(bench, [{'id': r['id'], 'question': r['question'], 'answer': r['answer']} for r in corpus['test'][:2]])
    models = {'base': tiny_checkpoint(tmp_path / 'base', tok, 1), 'sft': tiny_checkpoint(tmp_path / 'sft', tok, 2)}
    configure(monkeypatch, tmp_path, bench, models, {'base': ['base'], 'sft': ['1.0']}, n_samples=2,
              reference_samples=3)
    evaluate.main()
    rows = rows_by_key(json.loads((tmp_path / 'eval' / 'summary.json').read_text()))
    assert rows[('base', 'base')]['n'] == 6 and rows[('sft', '1.0')]['n'] == 4
    assert 'pass@3' in rows[('base', 'base')] and 'pass@2' in rows[('base', 'base')] and 'pass@2' in rows[('sft', '1.0')]
    # reference_samples no larger than n_samples changes nothing: every row n_samples, the samples files reused
    configure(monkeypatch, tmp_path, bench, models, {'base': ['base'], 'sft': ['1.0']}, n_samples=2,
              reference_samples=0)
    evaluate.main()
    rows = rows_by_key(json.loads((tmp_path / 'eval' / 'summary.json').read_text()))
    assert rows[('base', 'base')]['n'] == 4 and rows[('sft', '1.0')]['n'] == 4
