"""
What every stage hands the sampler (issue 12, findings 3 and 12), with the sampler replaced by
a recorder: the prompts of evaluation, the compressor's data build, CHRPO's teacher labels and
rollouts are exactly the SFT examples' prompts for the same question and mode (one system-turn
policy, data.SYSTEM_PROMPT), no eval config sets a system turn of its own, and each sampling
stage asks for the CUDA-graph decode when its config enables it.

    python -m pytest tests/test_stage_prompts.py -q
"""
import os

import pytest

import build_sft_data as bs
import configurator
import data
import evaluate
import sampler
import train_chrpo as tc
from common import save_checkpoint, write_jsonl
from test_chrpo_loop import tiny_model, tok  # noqa: F401 -- tok is a fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ['What is 3 plus 4?', 'Tom has 12 apples and gives away 5. How many are left?']


def sft_prompt(tok, question, mode):
    """The prompt ids of the SFT example train_sft.py builds for (question, mode)."""
    rec = {'id': 'x', 'question': question, 'cot': 'so 3 + 4 = 7', 'answer': '7', 'mode': mode,
           'chosen': '0.4' if mode == 'auto' else None}
    ids, mask = data.record_to_sft_example(rec, tok)
    return ids[:mask.index(1)]


@pytest.fixture
def recorder(monkeypatch, tok):  # noqa: F811
    """sampler.generate replaced: records (prompts, kwargs), answers every row with <|im_end|>."""
    calls = []

    def generate(model, prompts, n=1, **kw):
        calls.append((prompts, kw))
        return [{'prompt_index': p, 'tokens': [tok.eos_id], 'logprobs': [0.0], 'finish_reason': 'stop'}
                for p in range(len(prompts)) for _ in range(n)]

    monkeypatch.setattr(sampler, 'generate', generate)
    return calls


def items():
    return [{'id': f'q{i}', 'question': q, 'answer': '7'} for i, q in enumerate(QUESTIONS)]


def test_evaluation_renders_the_sft_prompt_in_every_mode(tok, recorder):  # noqa: F811
    for mode in data.MODES:
        recorder.clear()
        evaluate.sample_and_grade(tiny_model(tok.vocab_size), tok, items(), mode, n=1)
        assert recorder[0][0] == [sft_prompt(tok, q, mode) for q in QUESTIONS], mode


def test_build_teacher_and_rollouts_render_the_sft_prompt_and_ask_for_cuda_graphs(tok, recorder, tmp_path,
                                                                                 monkeypatch):  # noqa: F811
    # the compressor's data build: the base model answers in mode 'none'
    bs.sample_base_answers(tiny_model(tok.vocab_size), tok, items(), str(tmp_path / 'cache.jsonl'), 'base',
                           n_samples=1, temperature=0.7, top_p=0.9, max_new_tokens=8, seed=0, batch_size=4,
                           chunk_items=8, cuda_graph=bs.cuda_graph)
    assert recorder[0][0] == [sft_prompt(tok, q, 'none') for q in QUESTIONS]
    assert recorder[0][1]['cuda_graph'] is True and recorder[0][1]['batch_size'] == 4
    # CHRPO: main() labels (fixed budgets), then one step of rollouts ('auto')
    ckpt = save_checkpoint(str(tmp_path / 'sft'), tiny_model(tok.vocab_size), tok)
    write_jsonl(str(tmp_path / 'rl.jsonl'), items())
    cfg = dict(init_from=ckpt, rl_path=str(tmp_path / 'rl.jsonl'), out_dir=str(tmp_path / 'chrpo'), stage='all',
               max_iters=1, questions_per_step=2, group_size=2, teacher_samples=1, max_new_tokens=8, resume=False,
               autocast_dtype='float32', max_rl_questions=0, teacher_path='', tokenizer_path='')
    for k, v in cfg.items():
        monkeypatch.setattr(tc, k, v)
    recorder.clear()
    tc.main()
    by_mode = {}
    for prompts, kw in recorder:
        assert kw['cuda_graph'] is tc.cuda_graph is True
        for p in prompts:
            mode = next(m for m in data.MODES if p in [sft_prompt(tok, q, m) for q in QUESTIONS])
            by_mode.setdefault(mode, set()).add(tuple(p))
    assert set(by_mode) == {'0.2', '0.4', '0.6', '0.8', '1.0', 'auto'}  # teacher budgets, then the rollouts
    assert all(len(v) == 2 for v in by_mode.values())


def test_eval_configs_set_no_system_turn_of_their_own():
    defaults = {k: v for k, v in vars(evaluate).items() if not k.startswith('_')}
    for name in sorted(os.listdir(os.path.join(ROOT, 'config'))):
        if name.startswith('eval_'):
            configurator.apply_config(dict(defaults), [os.path.join(ROOT, 'config', name)])  # every key known
    with pytest.raises(SystemExit, match="unknown config key 'system'"):
        configurator.apply_config(dict(defaults), ["--system=You are a helpful assistant."])


def test_a_record_with_its_own_system_turn_is_refused(tok):  # noqa: F811
    rec = {'id': 'r7', 'question': 'q', 'cot': 'c', 'answer': '1', 'system': 'You are a helpful assistant.'}
    with pytest.raises(ValueError, match="record r7: key 'system'.*data.SYSTEM_PROMPT"):
        data.record_to_sft_example(rec, tok)
