"""
Tests for the data side: corpus.py (determinism, keep spans), tokenizer.py, data.py (chat
format against transformers' Jinja rendering of Qwen3's template, SFT examples, response
parsing, batches), benchmarks.py (loaders), annotate.py (the rule-based annotator and its
command). Run: python -m pytest -q tests/test_data.py
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import data
import train_sft
from annotate import annotate_cot, check_annotated, load_annotated
from benchmarks import load_benchmark
from common import read_jsonl, save_checkpoint
from corpus import SPLITS, build_corpus, corpus_stats, generate_corpus
from model import Qwen3, Qwen3Config
from tokenizer import SPECIAL_TOKENS, load_tokenizer

# Qwen3's chat template (Qwen/Qwen3-8B tokenizer_config.json), the independent reference
QWEN3_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n"
    "        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- for message in messages %}\n    {%- if message.content is string %}\n        {%- set content = message.content %}\n"
    "    {%- else %}\n        {%- set content = '' %}\n    {%- endif %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is string %}\n            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n            {%- if '</think>' in content %}\n"
    "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n            {%- endif %}\n        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n                {{- '<|im_start|>' + message.role + '\\n' + content }}\n            {%- endif %}\n"
    "        {%- else %}\n            {{- '<|im_start|>' + message.role + '\\n' + content }}\n        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n                    {{- '\\n' }}\n                {%- endif %}\n"
    "                {%- if tool_call.function %}\n                    {%- set tool_call = tool_call.function %}\n                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n                {{- tool_call.name }}\n                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n                    {{- tool_call.arguments | tojson }}\n                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- content }}\n"
    "        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n{%- endif %}"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_SIZES = {'train': 300, 'val': 40, 'test': 40, 'sft_pool': 40, 'rl_pool': 40}
EQUATION_RE = re.compile(r'\d+ [-+*/] \d+ = \d+')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('data'))
    corpus, tok, stats = build_corpus(out, seed=7, sizes=SMALL_SIZES, vocab_size=1024, verbose=False)
    return out, corpus, tok, stats


@pytest.fixture(scope='module')
def hf_tok(built):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_file=f"{built[0]}/tokenizer/tokenizer.json")


# -----------------------------------------------------------------------------
# corpus

def test_corpus_is_deterministic_in_seed():
    a = generate_corpus({'test': 30, 'train': 30}, seed=3)
    b = generate_corpus({'test': 30, 'train': 30}, seed=3)
    c = generate_corpus({'test': 30, 'train': 30}, seed=4)
    assert a == b
    assert [r['question'] for r in a['test']] != [r['question'] for r in c['test']]


def test_test_split_does_not_move_when_train_size_changes():
    a = generate_corpus({'test': 20, 'train': 10}, seed=3)
    b = generate_corpus({'test': 20, 'train': 50}, seed=3)
    assert a['test'] == b['test']


def test_splits_share_no_question(built):
    corpus = built[1]
    seen = {}
    for split, recs in corpus.items():
        assert len(recs) == SMALL_SIZES[split]
        for r in recs:
            assert r['question'] not in seen, (split, seen.get(r['question']))
            seen[r['question']] = split


def test_keep_spans_valid_and_every_equation_kept_whole(built):
    for recs in built[1].values():
        for r in recs:
            check_annotated(r, r['id'])
            eqs = list(EQUATION_RE.finditer(r['cot']))
            assert len(eqs) == r['difficulty']  # one written equation per step, no more
            for m in eqs:
                assert any(a <= m.start() and m.end() <= b for a, b in r['keep_spans']), (r['id'], m.group())
            conclusion = f"the answer is {r['answer']}"
            assert any(r['cot'][a:b] == conclusion for a, b in r['keep_spans'])


def key_texts_are_the_equations_and_the_conclusion(r):
    """Independent reference: the written equations and the conclusion, in text order."""
    key_texts = [r['cot'][a:b] for a, b in r['key_spans']]
    return key_texts == EQUATION_RE.findall(r['cot']) + [f"the answer is {r['answer']}"]


def test_key_spans_are_exactly_the_equations_and_the_conclusion(built):
    for r in built[1]['train'] + built[1]['test']:
        assert key_texts_are_the_equations_and_the_conclusion(r), r['id']
        for a, b in r['key_spans']:  # graded: every key span lies inside one keep span
            assert any(ka <= a and b <= kb for ka, kb in r['keep_spans'])
        # and some kept text is not key (the restated start value and step actions)
        assert sum(b - a for a, b in r['keep_spans']) > sum(b - a for a, b in r['key_spans'])


def test_bare_step_share_writes_that_share_of_steps_as_bare_equations_and_moves_no_question():
    def step_kinds(corpus):
        bare = with_action = 0
        for r in corpus['train']:
            for m in EQUATION_RE.finditer(r['cot']):
                before = r['cot'][:m.start()].rstrip()
                # an action sentence leads into its equation with ', so' / ':' / 'which gives'
                if before.endswith(('so', ':', 'gives')):
                    with_action += 1
                else:
                    assert before == '' or before.endswith(('.', 'Then', 'Next,')), (r['id'], before[-30:])
                    bare += 1
        return bare, with_action

    plain = generate_corpus({'test': 20, 'train': 300}, seed=5)
    half = generate_corpus({'test': 20, 'train': 300}, seed=5, bare_step_share=0.5)
    assert [r['question'] for s in plain for r in plain[s]] == [r['question'] for s in half for r in half[s]]
    assert step_kinds(plain)[0] == 0
    bare, with_action = step_kinds(half)
    assert 0.42 < bare / (bare + with_action) < 0.58  # ~900 steps: the share within 3 standard errors
    for r in half['train']:  # a bare equation is still a key span, and the only kept text of its step
        check_annotated(r, r['id'])
        assert key_texts_are_the_equations_and_the_conclusion(r), r['id']


def test_key_spans_must_lie_inside_keep_spans():
    rec = {'id': 'k1', 'question': 'q', 'cot': 'so 1 + 1 = 2 ok', 'answer': '2', 'keep_spans': [[3, 12]],
           'key_spans': [[3, 12]]}
    check_annotated(rec, 'k1')
    with pytest.raises(ValueError, match=r'k1: bad key_spans entry \[3, 14\]'):
        check_annotated(dict(rec, key_spans=[[3, 14]]), 'k1')
    with pytest.raises(ValueError, match=r"k1: key 'key_spans' must be list"):
        check_annotated(dict(rec, key_spans='3-12'), 'k1')


def test_equations_are_correct_and_values_bounded(built):
    for r in built[1]['train']:
        values = []
        for m in re.finditer(r'(\d+) ([-+*/]) (\d+) = (\d+)', r['cot']):
            x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            ref = {'+': x + y, '-': x - y, '*': x * y, '/': x / y}[op]
            assert ref == z and 1 <= z <= 99
            values.append(z)
        assert str(values[-1]) == r['answer']
        for n in re.findall(r'\d+', r['question']):  # the question states the givens
            assert 1 <= int(n) <= 99


def test_validate_record_names_the_problem():
    rec = {'id': 'x1', 'question': 'q', 'cot': 'abcdef', 'answer': '1', 'keep_spans': [[3, 5], [1, 2]]}
    with pytest.raises(ValueError, match=r'x1.*\[1, 2\]'):
        check_annotated(rec, 'x1')
    with pytest.raises(ValueError, match="x2: missing key 'cot'"):
        check_annotated({'id': 'x2', 'question': 'q'}, 'x2')


def test_kept_share_grows_with_difficulty(built):
    stats = corpus_stats(generate_corpus({'val': 100}, seed=1)['val'], built[2])
    shares = [stats[d]['kept_share'] for d in sorted(stats)]
    assert shares == sorted(shares) and 0.15 < shares[0] and shares[-1] < 0.5
    assert stats[5]['mean_cot_tokens'] < 320


def test_build_writes_files_and_tokenizer_loads(built):
    out, corpus = built[0], built[1]
    for split in SPLITS:
        assert read_jsonl(f"{out}/{split}.jsonl") == corpus[split]
    tok = load_tokenizer(f"{out}/tokenizer")
    assert tok.vocab_size == built[2].vocab_size and tok.encode('12 + 7 = 19') == built[2].encode('12 + 7 = 19')


# -----------------------------------------------------------------------------
# tokenizer

def test_digits_are_single_tokens(built):
    tok = built[2]
    ids = tok.encode('123 apples and 4567')
    digit_tokens = [tok.decode([i]) for i in ids if any(ch.isdigit() for ch in tok.decode([i]))]
    assert digit_tokens == list('1234567')


def test_result_weights_fall_on_exactly_the_digits_after_equals(built):
    # reference: the char spans of "= c" results found by a regex, mapped to tokens by their offsets
    tok = built[2]
    texts = [r['cot'] for r in built[1]['train'][:40]] + ['x =5, 1,200 = 7 and 3 + 4 = 12345678 = y', '= 9']
    classes = data.token_classes(tok)
    for text in texts:
        ids, offsets = tok.encode_with_offsets(text)
        spans = [m.span(1) for m in re.finditer(r'= ?(\d+)', text)]
        expected = [any(a <= s and e <= b for a, b in spans) for s, e in offsets[1:]]
        x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
        w = data.target_weights(x, y, classes, result_weight=4.0)[0]
        assert w.tolist() == [4.0 if hit else 1.0 for hit in expected], text
    assert w[-1] == 4.0  # '= 9': the 9 is a result
    y[0, -1] = -100  # an ignored target: weight 1, whatever came before it
    assert data.target_weights(x, y, classes, result_weight=4.0)[0, -1] == 1.0


def test_operand_digit_weights_fall_on_every_other_digit(built):
    # reference: every digit char of the text, minus the "= c" result digits (regex), by token offsets
    tok = built[2]
    classes = data.token_classes(tok)
    for text in [r['cot'] for r in built[1]['train'][:20]] + ['Tom has 27 cards. 27 - 8 = 19. the answer is 19.']:
        ids, offsets = tok.encode_with_offsets(text)
        results = [m.span(1) for m in re.finditer(r'= ?(\d+)', text)]
        x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
        w = data.target_weights(x, y, classes, result_weight=4.0, operand_weight=2.0)[0]
        expected = [4.0 if any(a <= s and e <= b for a, b in results) else 2.0 if text[s:e].isdigit() else 1.0
                    for s, e in offsets[1:]]
        assert w.tolist() == expected, text
    assert w.tolist().count(2.0) == 7 and w.tolist().count(4.0) == 2  # 27, 27, 8, 19 (the answer); 19 (result)


def test_budget_choice_weight_falls_on_exactly_a_policy_answers_chosen_budget(built):
    # a POLICY item's chosen <COMP_40> (its first answer token) gets the weight; a fixed-mode item
    # holds its <COMP_40> twice in the prompt (the question's and the mirrored prefix), never as a target
    tok = built[2]
    classes = data.token_classes(tok)
    rec = built[1]['train'][0]
    policy = data.record_to_sft_example(dict(rec, mode='auto', chosen='0.4'), tok)
    fixed = data.record_to_sft_example(dict(rec, mode='0.4'), tok)
    x, y = data.pad_batch([policy, fixed], tok.pad_id)
    w = data.target_weights(x, y, classes, budget_weight=7.0)
    chosen_id, auto_id = tok.token_to_id('<COMP_40>'), tok.token_to_id('<COMP_AUTO>')
    assert (x[0] == auto_id).sum() == 1 and (x[1] == chosen_id).sum() == 2 and (y[1] == chosen_id).sum() == 0
    assert w[0].tolist() == [7.0 if t == chosen_id else 1.0 for t in y[0].tolist()]
    assert (w[0] == 7.0).sum() == 1
    assert (w[1] == 1.0).all()


def test_special_and_budget_tokens_are_single_ids(built):
    tok = built[2]
    for t in SPECIAL_TOKENS:
        assert tok.encode(f"a{t}b") == tok.encode('a') + [tok.token_to_id(t)] + tok.encode('b')
    assert tok.budget_ids['0.4'] == tok.token_to_id('<COMP_40>')
    assert tok.id_to_budget[tok.token_to_id('<COMP_AUTO>')] == 'auto'
    assert tok.pad_id == tok.token_to_id('<|endoftext|>') and tok.eos_id == tok.token_to_id('<|im_end|>')
    assert set(tok.stop_ids) == {tok.pad_id, tok.eos_id}
    assert tok.vocab_size <= 1024


@pytest.mark.parametrize('text', ['Mia has 12 apples. She buys 7 more, so 12 + 7 = 19.',
                                  "  odd   spacing\n\n\ttabs, don't ünïcödé ∑ 数学 \\boxed{3/4}",
                                  data.render_prompt('What is 2 + 2?', '0.4', system='You are a helpful assistant.')])
def test_decode_inverts_encode(built, text):
    tok = built[2]
    assert tok.decode(tok.encode(text)) == text


def test_matches_transformers_fast_tokenizer(built, hf_tok):
    tok = built[2]
    text = built[1]['test'][0]['cot'] + data.render_prompt(built[1]['test'][1]['question'], 'auto') + '<COMP_60>\n<think>'
    assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf_tok.decode(tok.encode(text)) == text


def test_saved_folder_loads_with_autotokenizer(built):
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(f"{built[0]}/tokenizer")
    tok = built[2]
    text = data.render_prompt('Sam has 3 cards.', '0.2')
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.eos_token == '<|im_end|>' and hf.pad_token == '<|endoftext|>'
    assert len(hf) == tok.vocab_size


def test_loading_a_tokenizer_without_budget_tokens_adds_them(built, tmp_path):
    state = json.loads(built[2].tk.to_str())
    state['added_tokens'] = [t for t in state['added_tokens'] if not t['content'].startswith('<COMP_')]
    for t in data.BUDGET_TOKENS.values():  # also remove them from the model vocab, as in real Qwen3
        state['model']['vocab'].pop(t)
    (tmp_path / 'tokenizer.json').write_text(json.dumps(state))
    tok = load_tokenizer(str(tmp_path))
    assert len(set(tok.budget_ids.values())) == 6 and tok.vocab_size == built[2].vocab_size
    assert tok.encode('x <COMP_80>')[-1] == tok.budget_ids['0.8']


def test_think_tokens_survive_skip_special_tokens_like_qwen3(built):
    tok = built[2]
    ids = tok.encode('<COMP_40>\n<think>\nok\n</think>\n\nx<|im_end|>')
    assert tok.decode(ids, skip_special_tokens=True) == '\n<think>\nok\n</think>\n\nx'


# -----------------------------------------------------------------------------
# chat format

def _apply_qwen3_template(hf_tok, messages, add_generation_prompt):
    return hf_tok.apply_chat_template(messages, chat_template=QWEN3_CHAT_TEMPLATE, tokenize=False,
                                      add_generation_prompt=add_generation_prompt)


CONVERSATIONS = [
    [{'role': 'user', 'content': 'What is 2+2?'}],
    [{'role': 'system', 'content': 'You are a helpful assistant.'}, {'role': 'user', 'content': 'Hi\nthere'}],
    [{'role': 'user', 'content': 'Q <COMP_40>'},
     {'role': 'assistant', 'content': '<think>\nstep 1\nstep 2\n</think>\n\nThe answer is \\boxed{4}.'}],
    [{'role': 'system', 'content': 'sys'}, {'role': 'user', 'content': 'Q'},
     {'role': 'assistant', 'content': '<COMP_40>\n<think>\n\nreasoning\n\n</think>\n\n\nanswer'}],
    [{'role': 'user', 'content': 'Q'}, {'role': 'assistant', 'content': 'no thinking here'}],
    [{'role': 'user', 'content': 'Q1'}, {'role': 'assistant', 'content': '<think>\nr1\n</think>\n\nA1'},
     {'role': 'user', 'content': 'Q2'}, {'role': 'assistant', 'content': '<think>\nr2\n</think>\n\nA2'}],
]


@pytest.mark.parametrize('messages', CONVERSATIONS)
@pytest.mark.parametrize('add_generation_prompt', [False, True])
def test_render_chat_matches_qwen3_template(hf_tok, messages, add_generation_prompt):
    ref = _apply_qwen3_template(hf_tok, messages, add_generation_prompt)
    assert data.render_chat(messages, add_generation_prompt) == ref


@pytest.mark.parametrize('system', [None, 'You are a helpful assistant.'])
def test_prompt_plus_completion_equals_qwen3_chat_for_mode_none(hf_tok, system):
    q, cot, ans = 'Mia has 3 pens.', 'Mia has 3 pens. So the answer is 3.', data.answer_text('3')
    full = data.render_prompt(q, 'none', system) + data.render_completion(cot, ans, 'none') + '\n'
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': data.user_content(q, 'none')},
        {'role': 'assistant', 'content': f"<think>\n{cot}\n</think>\n\n{ans}"}]
    assert full == _apply_qwen3_template(hf_tok, messages, False)


@pytest.fixture(scope='module')
def ckpt_tok(built, tmp_path_factory):
    """transformers' tokenizer loaded from a checkpoint folder written the way training writes it."""
    from transformers import AutoTokenizer
    tok = built[2]
    cfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, torch_dtype='float32')
    ckpt = save_checkpoint(str(tmp_path_factory.mktemp('ckpt')), Qwen3(cfg).init_weights(seed=0), tok)
    return AutoTokenizer.from_pretrained(ckpt)


@pytest.mark.parametrize('mode', data.MODES)
@pytest.mark.parametrize('system', [None, 'You are a helpful assistant.'])
def test_checkpoint_chat_template_renders_training_prompt(built, ckpt_tok, mode, system):
    # a served user message ending with a budget token gets exactly the trained prompt:
    # fixed ratios mirror the token after the generation prompt, auto and none do not
    q = 'Ava has 12 shells. She buys 7 more shells.'
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': data.user_content(q, mode)}]
    text = ckpt_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == data.render_prompt(q, mode, system)
    ids = ckpt_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert list(ids) == built[2].encode(data.render_prompt(q, mode, system))


NO_MIRROR_CONVERSATIONS = CONVERSATIONS + [  # <COMP_AUTO> is never mirrored
    [{'role': 'user', 'content': data.user_content('Q', 'auto')}],
    [{'role': 'system', 'content': 'sys'}, {'role': 'user', 'content': data.user_content('Q', 'auto')}]]


@pytest.mark.parametrize('messages', NO_MIRROR_CONVERSATIONS)
@pytest.mark.parametrize('add_generation_prompt', [False, True])
@pytest.mark.parametrize('enable_thinking', [True, False])
def test_chat_template_without_budget_mirror_is_qwen3(hf_tok, messages, add_generation_prompt, enable_thinking):
    kw = dict(tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking)
    ours = hf_tok.apply_chat_template(messages, chat_template=data.CHAT_TEMPLATE, **kw)
    assert ours == hf_tok.apply_chat_template(messages, chat_template=QWEN3_CHAT_TEMPLATE, **kw)


def test_chat_template_mirror_with_thinking_disabled(hf_tok):
    # the mirrored token, then Qwen3's empty think block on its own line
    messages = [{'role': 'user', 'content': data.user_content('Q', '0.4')}]
    text = hf_tok.apply_chat_template(messages, chat_template=data.CHAT_TEMPLATE, tokenize=False,
                                      add_generation_prompt=True, enable_thinking=False)
    assert text == data.render_prompt('Q', '0.4') + '\n<think>\n\n</think>\n\n'


def test_chat_template_refuses_tools(hf_tok):
    with pytest.raises(Exception, match='tools'):
        hf_tok.apply_chat_template([{'role': 'user', 'content': 'Q'}], chat_template=data.CHAT_TEMPLATE,
                                   tools=[{'type': 'function', 'function': {'name': 'f', 'parameters': {}}}],
                                   tokenize=False)


def test_render_prompt_formats():
    q = 'Ben has 5 cards.'
    base = '<|im_start|>user\n' + data.PROMPT_PREFIX + q
    assert data.render_prompt(q, 'none') == base + '<|im_end|>\n<|im_start|>assistant\n'
    assert data.render_prompt(q, 0.4) == base + ' <COMP_40><|im_end|>\n<|im_start|>assistant\n<COMP_40>'
    assert data.render_prompt(q, 'auto') == base + ' <COMP_AUTO><|im_end|>\n<|im_start|>assistant\n'
    assert data.render_prompt(q, 1).endswith('<COMP_100><|im_end|>\n<|im_start|>assistant\n<COMP_100>')
    assert data.render_completion('c', 'a', 'auto', chosen=0.2) == '<COMP_20>\n<think>\nc\n</think>\n\na<|im_end|>'
    with pytest.raises(ValueError, match='0.3'):
        data.render_prompt(q, 0.3)
    with pytest.raises(ValueError, match='chosen'):
        data.render_completion('c', 'a', 'auto')


@pytest.mark.parametrize('mode,chosen', [('none', None), ('0.2', None), (0.6, None), ('1.0', None), ('auto', '0.8')])
def test_sft_example_prompt_is_prefix_and_mask_covers_completion(built, mode, chosen):
    tok, rec = built[2], built[1]['train'][5]
    ans = data.answer_text(rec['answer'])
    ids, mask = data.render_sft_example(rec['question'], rec['cot'], ans, mode, tok, chosen=chosen)
    prompt_ids = tok.encode(data.render_prompt(rec['question'], mode))
    assert ids[:len(prompt_ids)] == prompt_ids
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    completion = tok.decode(ids[len(prompt_ids):])
    assert completion == data.render_completion(rec['cot'], ans, mode, chosen) and completion.endswith('<|im_end|>')
    assert ids == tok.encode(data.render_prompt(rec['question'], mode) + completion)  # no boundary artefacts
    assert ids[-1] == tok.eos_id


def test_record_to_sft_example_defaults_and_errors(built):
    tok, rec = built[2], dict(built[1]['train'][0])
    ids, mask = data.record_to_sft_example(rec, tok)
    assert (ids, mask) == data.render_sft_example(rec['question'], rec['cot'], data.answer_text(rec['answer']), 'none', tok)
    ids2, _ = data.record_to_sft_example({**rec, 'mode': 'auto', 'chosen': '0.4', 'response': 'R'}, tok)
    assert tok.decode(ids2).endswith('<COMP_40>\n<think>\n' + rec['cot'] + '\n</think>\n\nR<|im_end|>')
    with pytest.raises(KeyError, match="train-00000.*'cot'"):
        data.record_to_sft_example({'id': 'train-00000', 'question': 'q', 'answer': '1'}, tok)
    with pytest.raises(ValueError, match='train-00000'):
        data.record_to_sft_example({**rec, 'mode': 'auto'}, tok)


def test_mode_name_is_the_one_normalization_and_the_budget_list_names_the_tokens():
    assert [data.mode_name(m) for m in (0.4, '0.4', 1, '1', 'auto', 'none', 'base')] == \
           ['0.4', '0.4', '1.0', '1.0', 'auto', 'none', 'none']  # 'base': the evaluator's name for 'none'
    for bad in (True, '0.3', 'fast', None):  # True is no ratio 1.0
        with pytest.raises(ValueError, match='unknown mode'):
            data.mode_name(bad)
    assert [data.budget_name(b) for b in (0.2, '1.0', None, 'auto', 'none', 'base')] == ['0.2', '1.0'] + [None] * 4
    with pytest.raises(ValueError, match="'0.3'"):  # not a budget: an error, not a histogram bin of its own
        data.budget_name('0.3')
    assert [data.BUDGET_TOKENS[m] for m in data.MODES[1:]] == \
           ['<COMP_20>', '<COMP_40>', '<COMP_60>', '<COMP_80>', '<COMP_100>', '<COMP_AUTO>']


def test_parse_response_on_hand_made_ids(built):
    tok = built[2]
    body = tok.encode('\n') + [tok.think_start_id] + tok.encode('\n12 + 7 = 19\n') + [tok.think_end_id]
    tail = tok.encode('\n\nThe answer is \\boxed{19}.') + [tok.eos_id]
    n_inside = len(tok.encode('\n12 + 7 = 19\n'))
    r = data.parse_response(tok, [tok.budget_ids['0.6']] + body + tail)
    assert r['budget'] == '0.6' and r['think_closed'] and r['think_tokens'] == n_inside
    assert r['answer_text'] == 'The answer is \\boxed{19}.'
    assert r['text'].startswith('<COMP_60>\n<think>') and r['text'].endswith('<|im_end|>')
    assert r['think_text'] == '12 + 7 = 19'  # the think span's text, stripped (the SFT build's own CoT)
    r = data.parse_response(tok, torch.tensor(body + tail))  # after a prompt holding the mirror
    assert r['budget'] is None and r['think_tokens'] == n_inside
    r = data.parse_response(tok, [tok.think_start_id] + tok.encode('never closed'))
    assert not r['think_closed'] and r['think_tokens'] is None and r['answer_text'] == ''
    r = data.parse_response(tok, [tok.think_end_id, tok.think_start_id] + tok.encode('x'))  # wrong order
    assert not r['think_closed']
    assert data.parse_response(tok, [])['budget'] is None


# -----------------------------------------------------------------------------
# real-dataset loaders

def _write(path, rows):
    path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in rows))
    return str(path)


def test_load_gsm8k_math_amc_metamath(tmp_path):
    gsm = _write(tmp_path / 'gsm.jsonl', [{'question': 'Q1', 'answer': 'work\n#### 1,234'}])
    assert load_benchmark(gsm) == [{'id': 'gsm.jsonl-0', 'question': 'Q1', 'answer': '1234'}]
    math = _write(tmp_path / 'math.jsonl', [
        {'problem': 'P1', 'solution': 'so $\\boxed{\\frac{1}{2}}$', 'answer': '\\frac{1}{2}', 'unique_id': 'a/1'},
        {'problem': 'P2', 'solution': 'x \\boxed{3} then \\boxed{\\sqrt{2}}'}])
    got = load_benchmark(math)
    assert got[0] == {'id': 'a/1', 'question': 'P1', 'answer': '\\frac{1}{2}'}
    assert got[1]['answer'] == '\\sqrt{2}'  # the LAST boxed, braces balanced
    amc = _write(tmp_path / 'amc.jsonl', [{'id': 7, 'problem': 'P', 'answer': 27.0}, {'question': 'Q', 'answer': 0.5}])
    assert [r['answer'] for r in load_benchmark(amc)] == ['27', '0.5']
    meta = _write(tmp_path / 'meta.jsonl', [{'query': 'Q', 'response': 'steps\nThe answer is: 42'}])
    assert load_benchmark(meta)[0]['answer'] == '42'
    js = tmp_path / 'x.json'
    js.write_text(json.dumps([{'question': 'Q', 'answer': '5'}]))
    assert load_benchmark(str(js))[0]['answer'] == '5'


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


# rows shaped like the hub's files: GSM8K (openai/gsm8k main), MATH-500, AMC23
GSM8K_ROWS = [{'question': 'Janet has 3 ducks.', 'answer': 'She has 3 + 4 = <<3+4=7>>7.\n#### 7'},
              {'question': 'A shop sells 1,200 pens.', 'answer': 'so 1200\n#### 1,200'}]
MATH500_ROWS = [{'problem': 'Find x.', 'solution': 'Thus $x = \\boxed{\\frac{1}{2}}$.', 'answer': '\\frac{1}{2}',
                 'subject': 'Algebra', 'level': 3, 'unique_id': 'test/algebra/1.json'},
                {'problem': 'Base 8?', 'solution': '\\boxed{2516_8}', 'answer': '2516_8',
                 'subject': 'Number Theory', 'level': 5, 'unique_id': 'test/number_theory/2.json'}]
AMC_ROWS = [{'id': 0, 'problem': 'How many?', 'answer': 27.0}, {'id': 1, 'problem': 'Which?', 'answer': 0.5}]
EXPECTED = {
    'gsm8k': [{'question': 'Janet has 3 ducks.', 'answer': '7'}, {'question': 'A shop sells 1,200 pens.', 'answer': '1200'}],
    'math500': [{'id': 'test/algebra/1.json', 'question': 'Find x.', 'answer': '\\frac{1}{2}', 'difficulty': 3},
                {'id': 'test/number_theory/2.json', 'question': 'Base 8?', 'answer': '2516_8', 'difficulty': 5}],
    'amc23': [{'id': '0', 'question': 'How many?', 'answer': '27'}, {'id': '1', 'question': 'Which?', 'answer': '0.5'}],
}
ROWS = {'gsm8k': GSM8K_ROWS, 'math500': MATH500_ROWS, 'amc23': AMC_ROWS}


@pytest.mark.parametrize('name', sorted(ROWS))
def test_loaders_read_parquet_and_jsonl_alike(tmp_path, name):
    from_parquet = load_benchmark(_write_parquet(tmp_path / f'{name}.parquet', ROWS[name]))
    from_jsonl = load_benchmark(_write(tmp_path / f'{name}.jsonl', ROWS[name]))
    for got in (from_parquet, from_jsonl):
        assert [{k: r[k] for k in EXPECTED[name][0]} for r in got] == EXPECTED[name]
    assert [r['answer'] for r in from_parquet] == [r['answer'] for r in from_jsonl]


def _fake_hub_dataset(cache, repo_id, files):
    """A hub cache folder as huggingface_hub lays it out: refs/main -> snapshots/<commit>/..."""
    repo = cache / ('datasets--' + repo_id.replace('/', '--'))
    commit = 'a' * 40
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    for rel, rows in files.items():
        path = repo / 'snapshots' / commit / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(path, rows)


def test_hub_names_read_parquet_from_the_offline_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))
    other = [{'question': 'not this one', 'answer': '#### 0'}]
    _fake_hub_dataset(tmp_path, 'openai/gsm8k', {'main/test-00000-of-00001.parquet': GSM8K_ROWS,
                                                 'main/train-00000-of-00001.parquet': other,
                                                 'socratic/test-00000-of-00001.parquet': other})
    _fake_hub_dataset(tmp_path, 'HuggingFaceH4/MATH-500', {'test.parquet': MATH500_ROWS})
    got = load_benchmark('gsm8k')
    assert [{k: r[k] for k in EXPECTED['gsm8k'][0]} for r in got] == EXPECTED['gsm8k']
    assert [r['answer'] for r in load_benchmark('math500')] == ['\\frac{1}{2}', '2516_8']
    with pytest.raises(FileNotFoundError, match='amc23'):  # not cached, and offline
        load_benchmark('amc23')


def test_load_synthetic_split(built):
    recs = load_benchmark('synthetic', 'test', data_dir=built[0])
    assert [(r['id'], r['question'], r['answer']) for r in recs] == \
           [(r['id'], r['question'], r['answer']) for r in built[1]['test']]


def test_malformed_lines_fail_with_file_and_line(tmp_path):
    bad = _write(tmp_path / 'bad.jsonl', [{'question': 'Q', 'answer': '1'}, '{"question": "Q2", ', ''])
    with pytest.raises(ValueError, match=r'bad\.jsonl:2: invalid JSON'):
        load_benchmark(bad)
    nofield = _write(tmp_path / 'nofield.jsonl', [{'question': 'Q', 'answer': '1'}, {'text': 'no question'}])
    with pytest.raises(ValueError, match=r"nofield\.jsonl:2: no 'question' or 'problem'"):
        load_benchmark(nofield)
    noans = _write(tmp_path / 'noans.jsonl', [{'problem': 'P', 'solution': 'no box'}])
    with pytest.raises(ValueError, match=r'noans\.jsonl:1: .*boxed'):
        load_benchmark(noans)
    with pytest.raises(ValueError, match=r'bad2\.jsonl:3: invalid JSON'):
        read_jsonl(_write(tmp_path / 'bad2.jsonl', ['{}', '', 'nope']))
    with pytest.raises(FileNotFoundError, match='nonexistent'):
        load_benchmark('nonexistent_benchmark')


# -----------------------------------------------------------------------------
# rule-based annotator

def _kept(cot, spans):
    return [cot[a:b] for a, b in spans]


def test_annotator_on_handwritten_cot():
    cot = ("Okay, let me think about this. Hmm, I need to figure out how many eggs are left. "
           "The farm has 16 eggs. She eats 3, so 16 - 3 = 13. Wait, let me double-check: 16 minus 3 is 13, yes. "
           "Then she bakes with 4: 13 - 4 = 9. So the answer is 9.")
    assert _kept(cot, annotate_cot(cot)) == ['The farm has 16 eggs', 'She eats 3, so 16 - 3 = 13',
                                                  'she bakes with 4: 13 - 4 = 9', 'the answer is 9']


def test_annotator_keeps_latex_whole_and_drops_repeats():
    cot = ("So we have $x = 3.5$. Then $$\\frac{a}{b} = 2.\n5$$ holds.\n"
           "Let me verify $x = 3.5$ again. I think x = 3.5. Therefore the final answer is $\\boxed{7}$.")
    kept = _kept(cot, annotate_cot(cot))
    assert kept == ['$x = 3.5$', '$$\\frac{a}{b} = 2.\n5$$ holds', 'the final answer is $\\boxed{7}$']
    for a, b in annotate_cot(cot):  # no span cuts a math span
        for m in re.finditer(r'\$\$.+?\$\$|\$.+?\$', cot, re.S):
            assert b <= m.start() or a >= m.end() or (a <= m.start() and m.end() <= b)


def test_annotator_agrees_with_synthetic_gold_spans(built):
    # an independent check: the rules recover most of the generator's kept characters
    hits = total = extra = 0
    for r in built[1]['val']:
        gold = set(k for a, b in r['keep_spans'] for k in range(a, b))
        pred = set(k for a, b in annotate_cot(r['cot']) for k in range(a, b))
        hits, total, extra = hits + len(gold & pred), total + len(gold), extra + len(pred - gold)
    assert hits / total > 0.9 and extra / total < 0.3


def test_annotate_command_and_compressor_loader_on_real_format_records(tmp_path):
    # records exactly as corpus.py writes them, keep_spans removed: `python annotate.py` and
    # the compressor's loader annotate them, and the spans keep what the CoT decides
    records = generate_corpus({'test': 30}, seed=11)['test']
    bare = [{k: v for k, v in r.items() if k != 'keep_spans'} for r in records]
    src, out = tmp_path / 'bare.jsonl', tmp_path / 'annotated.jsonl'
    src.write_text(''.join(json.dumps(r) + '\n' for r in bare))
    p = subprocess.run([sys.executable, 'annotate.py', str(src), str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    annotated = read_jsonl(str(out))
    assert annotated == load_annotated(str(src))
    for rec, orig in zip(annotated, bare):
        assert {k: v for k, v in rec.items() if k != 'keep_spans'} == orig  # nothing else touched
        check_annotated(rec, rec['id'])
        cot, spans = rec['cot'], rec['keep_spans']
        inside = lambda m: any(a <= m.start() and m.end() <= b for a, b in spans)
        assert len(spans) > rec['difficulty']
        assert all(inside(m) for m in EQUATION_RE.finditer(cot)), rec['id']  # every equation, whole
        assert inside(re.search(rf"the answer is {rec['answer']}", cot))  # the final answer sentence
        assert inside(re.search(r'\d+', cot))  # the start value (the first number the CoT states)
        for m in re.finditer(r'[^.!?]*(double-check|verify)[^.!?]*[.!?]', cot):  # re-checks dropped
            assert not any(a < m.end() and m.start() < b for a, b in spans), m.group()
        assert sum(b - a for a, b in spans) < 0.7 * len(cot)  # the filler goes
    # a file mixing annotated and bare records: given spans are kept as they are
    mixed = tmp_path / 'mixed.jsonl'
    mixed.write_text(json.dumps(records[0]) + '\n' + json.dumps(bare[1]) + '\n')
    got = load_annotated(str(mixed))
    assert got[0]['keep_spans'] == records[0]['keep_spans'] != annotate_cot(records[0]['cot'])  # not re-annotated
    assert got[1]['keep_spans'] == annotate_cot(bare[1]['cot'])


# -----------------------------------------------------------------------------
# batching

def test_pad_batch_shifts_targets_under_the_mask():
    ex = [([1, 2, 3, 4, 5], [0, 0, 1, 1, 1]), ([6, 7, 8], [0, 1, 1])]
    x, y = data.pad_batch(ex, pad_id=0)
    assert x.tolist() == [[1, 2, 3, 4], [6, 7, 0, 0]]
    assert y.tolist() == [[-100, 3, 4, 5], [7, 8, -100, -100]]
    x, y = data.pad_batch(ex, pad_id=0, max_len=2)
    assert x.tolist() == [[1, 2], [6, 7]] and y.tolist() == [[-100, 3], [7, 8]]
    with pytest.raises(ValueError, match='example 0'):
        data.pad_batch([([1, 2], [1])], 0)


def test_train_sft_batches_are_seeded_disjoint_full_and_padded_by_pad_batch():
    # the batching train_sft.py really uses: batch_indices over seeded epoch permutations,
    # ranks interleaved, and make_batch = pad_batch on the chosen examples
    examples = [([i, i + 1], [0, 1]) for i in range(23)]
    n, B, world = len(examples), 4, 2
    stream = lambda seed, rank: [train_sft.batch_indices(n, seed, m, rank, world, B) for m in range(6)]
    a = stream(1, 0)
    assert a == stream(1, 0) and a != stream(2, 0)
    b = stream(1, 1)
    for m in range(2):  # micro steps 0, 1 read global positions 0..15: all in epoch 0, no repeats across ranks
        assert not set(a[m]) & set(b[m])
    assert all(len(batch) == B for batch in a + b)
    epoch = lambda e: [i for m in range(6) for r in range(world) for i in stream(1, r)[m]][e * n:(e + 1) * n]
    assert sorted(epoch(0)) == sorted(epoch(1)) == list(range(n)) and epoch(0) != epoch(1)  # reshuffled each epoch
    x, y, n_tokens = train_sft.make_batch(examples, a[0], pad_id=0, device='cpu')
    assert x.shape == (4, 1) and y.shape == (4, 1) and n_tokens == 8
    assert x[:, 0].tolist() == a[0] and y[:, 0].tolist() == [i + 1 for i in a[0]]
