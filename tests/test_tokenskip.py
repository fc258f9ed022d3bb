"""Tests for the TokenSkip-style baseline compressor (tokenskip.py): it never reads the question,
and its score is the surprisal of each CoT token under the causal LM, checked against an
independent float64 log-softmax of one full forward pass.
    python -m pytest tests/test_tokenskip.py -q
"""
import pytest
import torch

import build_sft_data as bs
import compressor as cp
import tokenskip as ts
from data import THINK_START
from model import Qwen3, Qwen3Config
from tokenizer import train_tokenizer

COT = ('Okay, so Mia has 12 apples and buys 7 more. Hmm, wait, 12 + 7 = 19, yes.\n'
       'Then she gives 4 away: 19 - 4 = 15. Let me check again. So the answer is 15.')
SHORT = 'So 3 + 4 = 7.'


@pytest.fixture(scope='module')
def tok():
    texts = [COT, SHORT, 'How many apples does Mia have now? Tom has 5 pears.'] * 20
    return train_tokenizer(texts, vocab_size=300)


def causal_lm(tok, seed=0, max_pos=256):
    cfg = Qwen3Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=max_pos,
                      rope_theta=10000.0, tie_word_embeddings=False, torch_dtype='float32')
    return Qwen3(cfg).init_weights(seed=seed)


def reference_surprisal(model, tok, cot):
    """-log softmax(logits)[next token] in float64, one unpadded forward of <think>\\n + the CoT."""
    prefix = tok.encode(THINK_START + '\n')
    ids = prefix + cp.token_spans(tok, cot)[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].double()
    logp = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return (-logp[len(prefix) - 1:]).tolist()


@pytest.mark.parametrize('seed', [0, 1])
def test_baseline_compression_never_reads_the_question(tok, seed):
    model = causal_lm(tok, seed)
    ratios = [0.2, 0.4, 0.6, 0.8]
    questions = ['How many apples does Mia have now?', 'Tom has 5 pears. How many are left, 12 or 15?', '']
    rows = ts.compress_batch(model, tok, [(q, COT) for q in questions], ratios)
    for other in rows[1:]:
        assert other == rows[0]  # same kept tokens, text and ratios whatever the question says
    assert [r['kept_tokens'] for r in rows[0]] == sorted({r['kept_tokens'] for r in rows[0]})  # it does compress
    assert rows[0][0]['kept_tokens'] < rows[0][-1]['kept_tokens'] < rows[0][0]['total_tokens']


def test_surprisal_equals_float64_log_softmax_of_a_full_forward(tok):
    model = causal_lm(tok, seed=3)
    cots = [COT, SHORT, COT + ' ' + SHORT]  # different lengths in one padded batch
    got = ts.surprisals(model, tok, cots, batch_size=3)
    for cot, (spans, s) in zip(cots, got):
        ref = reference_surprisal(model, tok, cot)
        assert len(s) == len(ref) == len(spans)
        assert s == pytest.approx(ref, abs=1e-4)


def test_long_cot_is_scored_in_windows_that_restart_from_the_think_opener(tok):
    prefix = len(tok.encode(THINK_START + '\n'))
    model = causal_lm(tok, seed=4, max_pos=24)
    ids = cp.token_spans(tok, COT)[0]
    room = 24 - prefix
    assert len(ids) > 2 * room  # at least three windows
    spans, s = ts.surprisals(model, tok, [COT])[0]
    ref = []
    for w in range(0, len(ids), room):  # each window on its own, from the opener
        window = tok.decode(ids[w:w + room])
        assert cp.token_spans(tok, window)[0] == ids[w:w + room]
        ref += reference_surprisal(model, tok, window)
    assert s == pytest.approx(ref, abs=1e-4)


def test_scores_are_surprisal_minus_its_median():
    assert ts.centered([3.0, 1.0, 2.0]) == [1.0, -1.0, 0.0]
    assert ts.centered([4.0, 1.0, 2.0, 8.0]) == [2.0, -1.0, 0.0, 6.0]  # lower median: half the tokens <= 0
    assert ts.centered([]) == []


def test_sft_build_with_the_baseline_fills_buckets_from_the_same_samples(tok):
    """build_sft_records with compress=tokenskip.compress_batch: the same records pipeline
    (every bucket 0.2..0.8 and the original per question), compressed question-agnostically."""
    model = causal_lm(tok, seed=5)
    samples = [{'id': f'q{i}', 'question': f'Question {i}?', 'gold': '15', 'difficulty': 2, 'correct': True,
                'tokens': tok.encode(f'<think>\n{COT}\n</think>\n\nThe answer is \\boxed{{15}}.<|im_end|>')}
               for i in range(3)]
    kw = dict(compress_ratios=[r / 20 for r in range(2, 19)], bucket_tol=0.05, min_cot_tokens=4,
              compress_batch_size=4, seed=0, replay_fraction=1.0, warmup_fraction=0.0, warmup_mix='natural')
    records, stats = bs.build_sft_records(model, tok, samples, tok, None, compress=ts.compress_batch, **kw)
    assert stats['questions'] == 3 and stats['missing_bucket'] == 0
    by_q = {}
    for r in records:
        by_q.setdefault(r['id'], {})[r['mode']] = r['cot']
    texts = {tuple(sorted(m.items())) for m in by_q.values()}
    modes = {m for v in by_q.values() for m in v}
    assert {'0.2', '0.4', '0.6', '0.8'} <= modes
    # one CoT, three questions: the compressed texts per bucket agree across questions
    assert len({tuple(v[m] for m in ('0.2', '0.4', '0.6', '0.8')) for v in by_q.values()}) == 1, texts
