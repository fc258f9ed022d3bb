"""Tests for the compressor (CPU, small): labelling and compression (compressor.py), the
planted-rule learning check (train_compressor.py), re-bucketing and the SFT build
(build_sft_data.py), malformed data (annotate.load_annotated, the compressor's reader).
    python -m pytest tests/test_compressor.py -q
"""
import json
import random
import threading

import pytest
import torch

import build_sft_data as bs
import compressor as cp
import train_compressor as tc
from annotate import load_annotated
from configurator import config_keys
from data import answer_text, parse_response, render_completion
from rewards import check_integrity
from tokenizer import load_tokenizer, train_tokenizer


WORDS = ['so', 'then', 'we', 'have', 'the', 'total', 'hmm', 'wait', 'check', 'apples', 'now', 'is']


def planted_record(rng, i):
    """A CoT of filler words, numbers and '=': keep spans = the digit runs and '=' signs."""
    parts = []
    for _ in range(rng.randint(8, 16)):
        r = rng.random()
        parts.append(str(rng.randint(1, 99)) if r < 0.3 else '=' if r < 0.4 else rng.choice(WORDS))
    cot = ' '.join(parts)
    spans, pos = [], 0
    for p in parts:
        if p[0].isdigit() or p == '=':
            spans.append([pos, pos + len(p)])
        pos += len(p) + 1
    return {'id': f'p{i}', 'question': f'What is {rng.randint(1, 9)} plus {rng.randint(1, 9)}?', 'cot': cot,
            'answer': '1', 'keep_spans': spans}


@pytest.fixture(scope='module')
def tok_dir(tmp_path_factory):
    rng = random.Random(0)
    texts = [planted_record(rng, i)['cot'] for i in range(300)] + ['Mia has 12 apples. 12 + 7 = 19, so 19 - 4 = 15.'] * 5
    tok = train_tokenizer(texts, vocab_size=400)
    d = tmp_path_factory.mktemp('tok')
    tok.save(str(d))
    return str(d)


@pytest.fixture(scope='module')
def tok(tok_dir):
    return load_tokenizer(tok_dir)


def write_jsonl(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


def train_tiny(monkeypatch, tmp_path, tok_dir, **kw):
    """train_compressor.main() with these config values (as a config file would set them)."""
    cfg = dict(out_dir=str(tmp_path / 'comp'), tokenizer_path=tok_dir, n_layer=1, n_embd=64, n_head=2, n_kv_head=1,
               intermediate_size=128, max_len=96, batch_size=16, max_iters=40, learning_rate=3e-3,
               eval_interval=20, patience=5, device_type='cpu', max_train_records=0, max_val_records=0)
    for k, v in dict(cfg, **kw).items():
        assert k in config_keys(vars(tc)), k
        monkeypatch.setattr(tc, k, v)
    return tc.main()


def random_model(tok, seed=0):
    return cp.build_model(tok, 'scratch', seed, n_layer=1, n_embd=32, n_head=2, n_kv_head=1, intermediate_size=64,
                          max_len=256).eval()


BUILD_KW = {k: getattr(bs, k) for k in ('compress_ratios', 'bucket_tol', 'min_cot_tokens', 'compress_batch_size',
                                        'seed', 'replay_fraction', 'warmup_fraction',
                                        'warmup_mix')}  # build_sft_data.py's defaults


# -----------------------------------------------------------------------------

def test_labels_keep_exactly_tokens_overlapping_keep_spans(tok):
    rng = random.Random(1)
    for i in range(20):
        rec = planted_record(rng, i)
        ids, start, spans, labels = cp.encode_pair(tok, rec['question'], rec['cot'], 512, 64, rec['keep_spans'])
        assert labels[:start] == [-100] * start  # question + separator: context only
        assert ids[start - 1] == tok.think_start_id
        keep_chars = set(c for a, b in rec['keep_spans'] for c in range(a, b))  # independent char-level reference
        for (s, e), lab in zip(spans, labels[start:]):
            if s == e:
                assert lab == -100
            else:
                assert lab == int(any(c in keep_chars for c in range(s, e)))
        assert sum(l == 1 for l in labels) >= len(rec['keep_spans'])


def test_graded_labels_give_key_one_support_soft_and_filler_zero(tok):
    rng = random.Random(3)
    for i in range(20):
        rec = planted_record(rng, i)
        key = [sp for sp in rec['keep_spans'] if rec['cot'][sp[0]:sp[1]] == '=']  # '=' signs are key
        ids, start, spans, labels = cp.encode_pair(tok, rec['question'], rec['cot'], 512, 64, rec['keep_spans'],
                                                   key, support_label=0.7)
        keep_chars = set(c for a, b in rec['keep_spans'] for c in range(a, b))  # char-level reference
        key_chars = set(c for a, b in key for c in range(a, b))
        for (s, e), lab in zip(spans, labels[start:]):
            chars = range(s, e)
            want = -100 if s == e else 1 if any(c in key_chars for c in chars) else \
                0.7 if any(c in keep_chars for c in chars) else 0
            assert lab == want, (rec['cot'][s:e], lab, want)


def test_soft_target_loss_matches_float64_reference_and_hard_labels_match_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 2)
    soft = torch.tensor([[0.0, 1.0, -100, 0.7, 0.0], [1.0, 0.7, 0.0, -100, -100]])
    mask = soft != -100
    logp = torch.log_softmax(logits[mask].double(), -1)
    t = soft[mask].double()
    ref = -(t * logp[:, 1] + (1 - t) * logp[:, 0]).mean()
    assert torch.allclose(tc.token_loss(logits, soft, 'ce').double(), ref, atol=1e-6)
    p = logp.exp()
    ref_focal = -(t * (1 - p[:, 1]) ** 2 * logp[:, 1] + (1 - t) * (1 - p[:, 0]) ** 2 * logp[:, 0]).mean()
    assert torch.allclose(tc.token_loss(logits, soft, 'focal', 2.0).double(), ref_focal, atol=1e-6)
    hard = torch.tensor([[0, 1, -100, 1, 0], [1, 1, 0, -100, -100]])
    assert torch.allclose(tc.token_loss(logits, hard, 'ce'),
                          torch.nn.functional.cross_entropy(logits.flatten(0, 1), hard.flatten(), ignore_index=-100))


def test_focal_loss_is_ce_at_gamma_zero_and_downweights_easy_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 2)
    labels = torch.tensor([[0, 1, -100, 1, 0], [1, 1, 0, -100, -100]])
    ce = tc.token_loss(logits, labels, 'ce')
    assert torch.allclose(tc.token_loss(logits, labels, 'focal', gamma=0.0), ce, atol=1e-6)
    keep = labels != -100
    p = torch.softmax(logits[keep], -1).gather(1, labels[keep][:, None]).squeeze(1)
    ref = (-(1 - p) ** 2 * p.log()).mean()
    assert torch.allclose(tc.token_loss(logits, labels, 'focal', gamma=2.0), ref, atol=1e-6)
    with pytest.raises(ValueError, match='focal'):
        tc.token_loss(logits, labels, 'mse')


def test_classifier_learns_planted_digit_and_equals_rule(tmp_path, tok_dir, monkeypatch):
    rng = random.Random(2)
    train = write_jsonl(tmp_path / 'train.jsonl', [planted_record(rng, i) for i in range(400)])
    val = write_jsonl(tmp_path / 'val.jsonl', [planted_record(rng, 1000 + i) for i in range(60)])
    m = train_tiny(monkeypatch, tmp_path, tok_dir, train_path=train, val_path=val)
    assert m['macro_f1'] > 0.95  # chance (all-drop or coin flip) is at most ~0.5
    for g in (0.2, 0.4):  # a perfect ranking keeps min(1, g / keep share) of the keep tokens
        assert m[f'survival@{g}'] > 0.95 * min(1.0, g / m['keep_share'])
    assert m['key_survival@0.2'] == m['survival@0.2']  # binary labels: every keep token is key
    assert tc.find_checkpoint(str(tmp_path / 'comp')) is not None
    # resuming a finished run does not train again and returns the same best metrics
    again = train_tiny(monkeypatch, tmp_path, tok_dir, train_path=train, val_path=val, resume=True)
    assert again['macro_f1'] == m['macro_f1']


def test_graded_training_ranks_key_tokens_first(tmp_path, tok_dir, monkeypatch):
    """With '=' signs as key spans and digits as support, a ratio below the keep share keeps
    the key tokens (binary labels would tie them with the digits)."""
    rng = random.Random(4)

    def graded(i):
        rec = planted_record(rng, i)
        return dict(rec, key_spans=[sp for sp in rec['keep_spans'] if rec['cot'][sp[0]:sp[1]] == '='])
    train = write_jsonl(tmp_path / 'train.jsonl', [graded(i) for i in range(400)])
    val = write_jsonl(tmp_path / 'val.jsonl', [graded(1000 + i) for i in range(60)])
    m = train_tiny(monkeypatch, tmp_path, tok_dir, train_path=train, val_path=val, support_label=0.7)
    assert m['macro_f1'] > 0.95  # support tokens still score above 0: predicted keep
    assert m['key_survival@0.2'] > 0.95  # '=' is ~10% of words: all of it fits at 0.2 ...
    assert m['survival@0.2'] < 0.9  # ... while the keep share (~40%) does not


COT = ('Okay, let me think. Mia has 12 apples at the start. Then she buys 7 more, so 12 + 7 = 19. '
       'Hmm, wait, 12 plus 7 is 19, yes.\nThen she gives 4 away: 19 - 4 = 15. Also $x + 1 = 2$ holds. '
       'Let me check again. So the answer is 15.')


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_compress_hits_ratio_and_keeps_formulas_whole(tok, seed):
    model = random_model(tok, seed)
    ratios = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
    rows = cp.compress_batch(model, tok, [('How many apples?', COT)], ratios)[0]
    spans, scores = cp.score_cots(model, tok, [('How many apples?', COT)])[0]
    units = cp.group_drop_runs(COT, cp.cot_units(COT, spans), scores)
    biggest = max(len(u[2]) for u in units)
    orig_formulas = {COT[a:b] for a, b in cp.formula_spans(COT)}
    assert {'12 + 7 = 19', '19 - 4 = 15', '$x + 1 = 2$'} <= orig_formulas
    for g, r in zip(ratios, rows):
        target = int(r['total_tokens'] * g + 0.5)
        assert abs(r['kept_tokens'] - target) <= biggest / 2
        assert abs(r['realized_ratio'] - r['kept_tokens'] / r['total_tokens']) < 0.08
        text = r['text']
        # never a partial equation: every '=' in the output sits in a whole original formula
        out_formulas = [text[a:b] for a, b in cp.formula_spans(text)]
        assert all(f in orig_formulas for f in out_formulas), (text, out_formulas)
        assert text.count('=') == sum(f.count('=') for f in out_formulas)
        assert '  ' not in text and text == text.strip()
    assert rows[-1]['text'] == ' '.join(COT.split(' ')).replace(' \n', '\n')  # ratio 1.0 keeps everything
    single = cp.compress(model, tok, 'How many apples?', COT, 0.5)
    assert single['text'] == rows[3]['text']


def test_compress_keeps_highest_scoring_units_in_original_order(tok):
    cot = 'alpha beta 3 gamma 9 delta'
    _, spans = cp.token_spans(tok, cot)
    units = cp.cot_units(cot, spans)
    words = [cot[u[0]:u[1]] for u in units]
    scores = [0.0] * len(spans)
    for u in units:  # score the numbers high
        for i in u[2]:
            scores[i] = 5.0 if cot[u[0]].isdigit() else -1.0
    n = sum(len(u[2]) for u in units)
    kept, total, _ = cp.select_units(units, scores, 2 / n)
    assert [words[j] for j in kept] == ['3', '9'] and total == 2
    assert cp.render_units(cot, units, kept) == '3 9'


def test_filler_enters_a_compression_as_whole_sentences_never_torn_words(tok):
    # decisive words score high, every other word low: above the decisive share the budget is
    # filled with whole drop sentences, so no sentence is ever cut into loose words or clauses
    cot = 'Okay, let me think about this. Mia has 12 apples. Hmm, so that was the count. The answer is 12.'
    _, spans = cp.token_spans(tok, cot)
    keep_words = {'Mia', 'has', '12', 'apples.', 'answer', 'is', '12.'}
    units = cp.cot_units(cot, spans)
    scores = [0.0] * len(spans)
    for u in units:
        for i in u[2]:
            scores[i] = 3.0 if cot[u[0]:u[1]] in keep_words else -1.0 - 0.01 * u[0]
    grouped = cp.group_drop_runs(cot, units, scores)
    texts = [cot[u[0]:u[1]] for u in grouped]
    assert 'Okay, let me think about this.' in texts and 'Hmm, so that was the count.' in texts
    assert 'The' in texts  # 'The' alone: a decisive word follows it
    for g in (0.3, 0.5, 0.7, 0.9):
        kept, _, _ = cp.select_units(grouped, scores, g)
        out = cp.render_units(cot, grouped, kept)
        assert 'Mia has 12 apples.' in out  # decisive words first
        for sentence in ('Okay, let me think about this.', 'Hmm, so that was the count.'):
            words = sentence.split()
            present = [w for w in words if f' {w} ' in f' {out} ']
            assert len(present) in (0, len(words)) or sentence in out, (g, out)


def test_recomputing_filler_is_taken_after_every_other_filler_sentence(tok):
    # a spoken re-check ("45 minus 4 is 41, yes.") is filler holding two or more numbers; even
    # when the classifier's noise scores it above the other filler, a budget takes it last
    cot = ('Okay, let me start. Mia has 45 apples. She gives 4 away, 45 - 4 = 41. Hmm, 45 minus 4 is 41, yes. '
           'So the count is 41 now. Let me keep going. Then she finds 9 more, 41 + 9 = 50. '
           'Wait, is that right? 41 plus 9 is 50. That seems right. So the answer is 50.')
    decisive = [(cot.index(t), cot.index(t) + len(t)) for t in
                ('Mia has 45 apples.', 'She gives 4 away,', 'she finds 9 more,', 'the answer is 50.')]
    _, spans = cp.token_spans(tok, cot)
    units = cp.cot_units(cot, spans)
    scores = [0.0] * len(spans)
    for u in units:
        inside = any(a <= u[0] and u[1] <= b for a, b in decisive)
        for i in u[2]:
            # filler with digits scores highest among filler: the ranking the rule must override
            scores[i] = 7.0 if u[3] or inside else -7.5 if any(c.isdigit() for c in cot[u[0]:u[1]]) else -8.0
    grouped = cp.group_drop_runs(cot, units, scores, support_max=3.0)
    last = cp.recomputing_filler(cot, grouped, scores)
    assert sorted(cot[grouped[j][0]:grouped[j][1]] for j in last) == ['41 plus 9 is 50.', 'Hmm, 45 minus 4 is 41, yes.']
    filler = [j for j, u in enumerate(grouped) if max(scores[i] for i in u[2]) <= 0]
    n = sum(len(u[2]) for u in grouped)
    for g in [k / 20 for k in range(21)]:
        kept, _, _ = cp.select_units(grouped, scores, g, last)
        if any(j in kept for j in last):  # a re-check is in only once every other filler sentence is
            assert all(j in kept for j in filler if j not in last), (g, cp.render_units(cot, grouped, kept))
        # without the rule the noisy ranking keeps a re-check first
        if g == 0.8:
            plain, _, _ = cp.select_units(grouped, scores, g)
            assert any(j in plain for j in last) and not any(j in kept for j in last)
    assert cp.select_units(grouped, scores, 1.0, last)[1] == n


def _torn_clauses(cot, grouped, kept, clauses):
    """Clauses of which some characters (outside whitespace) were kept but not all."""
    kept_chars = {c for j in kept for c in range(grouped[j][0], grouped[j][1])}
    torn = []
    for clause in clauses:
        start = cot.index(clause)
        chars = {start + k for k, ch in enumerate(clause) if not ch.isspace()}
        if 0 < len(chars & kept_chars) < len(chars):
            torn.append(clause)
    return torn


def test_support_words_enter_a_compression_as_whole_clauses_with_support_max(tok):
    # graded scores: key (equations, the conclusion) ~7, support (restated actions) ~0.9 with
    # arbitrary small differences, filler ~-8. Between the key share and key + support, a budget
    # keeps whole restated actions or none of them; word by word (support_max=None) it tears them
    cot = ('Okay, let me think. Mia has 12 apples. She picks up 7 more apples from Sam, 12 + 7 = 19. '
           'Hmm, right. She gives away 4 of her apples, 19 - 4 = 15. The answer is 15.')
    support = ['Mia has 12 apples.', 'She picks up 7 more apples from Sam,', 'She gives away 4 of her apples,']
    key_words = {'The', 'answer', 'is', '15.'}
    _, spans = cp.token_spans(tok, cot)
    units = cp.cot_units(cot, spans)
    support_words = {w for c in support for w in c.split()}
    scores = [0.0] * len(spans)
    for k, u in enumerate(units):
        word = cot[u[0]:u[1]]
        for i in u[2]:
            scores[i] = (7.0 if u[3] or word in key_words else
                         0.9 + 0.01 * ((k * 7) % 5) if word in support_words else -8.0)
    torn_any = False
    for g in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65):
        for support_max, expect_whole in ((3.0, True), (None, False)):
            grouped = cp.group_drop_runs(cot, units, scores, support_max)
            kept, _, _ = cp.select_units(grouped, scores, g)
            out = cp.render_units(cot, grouped, kept)
            assert '12 + 7 = 19' in out and '19 - 4 = 15' in out and 'The answer is 15.' in out  # key first
            torn = _torn_clauses(cot, grouped, kept, support)
            if expect_whole:
                assert not torn, (g, out)
            else:
                torn_any = torn_any or bool(torn)
    assert torn_any  # without the support grouping some budget tears a restated action


def test_rebucket_takes_nearest_compression_within_tolerance():
    rows = [{'realized_ratio': r} for r in (0.13, 0.23, 0.19, 0.36, 0.5, 0.63, 0.86)]
    b = bs.rebucket(rows, 0.05)
    assert b[0.2]['realized_ratio'] == 0.19 and b[0.4]['realized_ratio'] == 0.36
    assert b[0.6]['realized_ratio'] == 0.63 and 0.8 not in b  # 0.86 is outside +-0.05


def test_malformed_corpus_gives_errors_naming_file_line_and_key(tmp_path):
    good = {'id': 'a', 'question': 'q', 'cot': 'so 1 + 1 = 2', 'answer': '2', 'keep_spans': [[3, 12]]}
    p = tmp_path / 'bad.jsonl'
    p.write_text(json.dumps(good) + '\n{not json\n')
    with pytest.raises(ValueError, match=r'bad\.jsonl:2: invalid JSON'):
        load_annotated(str(p))
    p.write_text(json.dumps(good) + '\n\n' + json.dumps({k: v for k, v in good.items() if k != 'cot'}) + '\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: missing key 'cot'"):
        load_annotated(str(p))
    p.write_text(json.dumps(dict(good, keep_spans=[[3, 99]])) + '\n')
    with pytest.raises(ValueError, match=r'bad\.jsonl:1: bad keep_spans entry \[3, 99\]'):
        load_annotated(str(p))
    p.write_text(json.dumps(dict(good, keep_spans='3-12')) + '\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: key 'keep_spans' must be list"):
        load_annotated(str(p))
    with pytest.raises(FileNotFoundError, match='missing.jsonl'):
        load_annotated(str(tmp_path / 'missing.jsonl'))


def test_sft_build_and_rl_validity_agree_on_what_a_loop_is(tok):
    # one definition (rewards.is_degenerate): a long correct CoT that repeats its phrasing once a
    # step is no loop (the build's old rule, "a 4-gram seen more than 6 times", dropped this one);
    # a CoT that repeats one block is a loop, for the SFT build and for CHRPO's validity alike
    steps = ' '.join(f'Then she buys {b} more apples, so {a} + {b} = {a + b}.'
                     for a, b in zip(range(10, 50, 4), range(1, 11)))
    loop = 'Then she buys more apples, so ' * 12
    for cot, is_loop in ((steps, False), (loop, True)):
        ids = tok.encode(render_completion(cot, answer_text(1), 'none'))  # the same CoT as a rollout
        _, why = check_integrity(parse_response(tok, ids), 'stop', ids, require_control=False)
        assert bs.degenerate_cot(tok, cot, min_tokens=4) == ('degenerate' in why) == is_loop
    assert bs.degenerate_cot(tok, '12 + 7', min_tokens=8)  # too short: the build's own length rule


def graded_rows(items, n, seed):
    """What evaluate.sample_and_grade returns for items (n rows each), tokens naming seed and row."""
    return [{'id': it['id'], 'question': it['question'], 'gold': it['answer'], 'difficulty': None,
             'correct': False, 'tokens': [seed, j]} for it in items for j in range(n)]


def test_build_samples_only_uncached_questions_seeded_by_their_position(tmp_path, monkeypatch):
    calls = []

    def sample_and_grade(model, tok, items, mode, n=1, seed=None, **kw):
        calls.append(([it['id'] for it in items], seed))
        return graded_rows(items, n, seed)
    monkeypatch.setattr(bs, 'sample_and_grade', sample_and_grade)
    items = [{'id': f'q{i}', 'question': f'Q{i}', 'answer': '1'} for i in range(5)]
    cache = str(tmp_path / 'cache.jsonl')
    kw = dict(n_samples=2, temperature=0.3, top_p=0.9, max_new_tokens=8, seed=100, chunk_items=2, batch_size=4)
    first = bs.sample_base_answers(None, None, items[:3], cache, 'base_a', **kw)
    assert calls == [(['q0', 'q1'], 100), (['q2'], 102)]
    calls.clear()
    rows = bs.sample_base_answers(None, None, items, cache, 'base_a', **kw)  # the warm-up build: more questions
    assert calls == [(['q3', 'q4'], 103)]  # only the new ones, seeded by their position
    assert [r['id'] for r in rows] == [f'q{i}' for i in range(5) for _ in range(2)] and rows[:6] == first
    calls.clear()
    bs.sample_base_answers(None, None, items[:1], cache, 'base_b', **kw)  # another base model: nothing reused
    assert calls == [(['q0'], 100)]
    calls.clear()
    bs.sample_base_answers(None, None, items[:1], cache, 'base_a', **dict(kw, temperature=0.7))  # other settings
    assert calls == [(['q0'], 100)]
    # a checkpoint folder is known by its weights: retrained in place it is sampled again,
    # the same weights in another folder are not
    ckpt, copy = tmp_path / 'ckpt', tmp_path / 'copy'
    for folder in (ckpt, copy):
        folder.mkdir()
        (folder / 'model.safetensors').write_bytes(b'weights v1')
    calls.clear()
    bs.sample_base_answers(None, None, items[:1], cache, str(ckpt), **kw)
    bs.sample_base_answers(None, None, items[:1], cache, str(copy), **kw)
    assert calls == [(['q0'], 100)]
    (ckpt / 'model.safetensors').write_bytes(b'weights v2')
    calls.clear()
    bs.sample_base_answers(None, None, items[:1], cache, str(ckpt), **kw)
    assert calls == [(['q0'], 100)]


def test_build_records_fill_every_bucket_and_split_full_ratio(tok):
    model = random_model(tok, 3)
    rng = random.Random(5)
    samples = []
    for i in range(8):
        a, b = rng.randint(10, 50), rng.randint(1, 9)
        cot = (f'Okay, so I start with {a} apples. Hmm, let me think about it. Then I add {b}, so {a} + {b} = {a + b}. '
               f'Wait, let me check: {a} plus {b} is {a + b}, yes. Now I think that is it, the total is {a + b}. '
               f'So the answer is {a + b}.')
        tokens = tok.encode(render_completion(cot, answer_text(a + b), 'none'))
        samples.append({'id': f'q{i}', 'question': f'{a} plus {b}?', 'gold': str(a + b), 'tokens': tokens,
                        'correct': True, 'difficulty': 1})
    samples.append(dict(samples[0], id='wrong', correct=False))
    samples.append(dict(samples[1], id='loop', tokens=tok.encode(render_completion('so so so so ' * 10, 'x', 'none'))))
    teacher = [{'id': 'q0', 'g_star': 0.4}, {'id': 'q1', 'g_star': None}, {'id': 'q2', 'g_star': 0.2}]
    records, stats = bs.build_sft_records(model, tok, samples, tok, teacher, **dict(BUILD_KW, warmup_fraction=1.0))
    assert stats['degenerate'] >= 1  # the repetition loop
    fixed = [r for r in records if r['mode'] != 'auto']
    by_q = {}
    for r in fixed:
        by_q.setdefault(r['id'], set()).add(r['mode'])
    assert 'wrong' not in by_q and 'loop' not in by_q and stats['questions'] == len(by_q) > 0
    for modes in by_q.values():  # every question in every bucket, 1.0 as either '1.0' or 'none'
        assert modes - {'1.0', 'none'} == {'0.2', '0.4', '0.6', '0.8'} and len(modes & {'1.0', 'none'}) == 1
    full = [r['mode'] for r in fixed if r['mode'] in ('1.0', 'none')]
    assert abs(full.count('1.0') - full.count('none')) <= 1
    for r in fixed:
        target = 1.0 if r['mode'] in ('1.0', 'none') else float(r['mode'])
        assert abs(r['realized_ratio'] - target) <= 0.05 + 1e-9
    warm = [r for r in records if r['mode'] == 'auto']
    assert all(r['chosen'] in bs.POLICY_MIX for r in warm)
    assert any(r['chosen'] == '1.0' for r in warm if r['id'] == 'q1')  # all-fail -> 1.0


def test_corpus_replay_is_the_requested_share_of_the_set_in_mode_none():
    corpus = [{'id': f'train-{i}', 'question': f'Q{i}?', 'cot': f'cot {i}', 'answer': str(i), 'difficulty': 1}
              for i in range(500)]
    replay = bs.corpus_replay_records(corpus, 70, 0.3, seed=3)
    assert len(replay) == 30                            # 30 / (70 + 30) = the share
    assert len({r['id'] for r in replay}) == 30         # drawn without replacement
    by_id = {r['id']: r for r in corpus}
    for r in replay:                                   # the corpus's own CoT, no budget token
        assert r['mode'] == 'none' and r['cot'] == by_id[r['id']]['cot'] and r['answer'] == by_id[r['id']]['answer']
    assert replay == bs.corpus_replay_records(corpus, 70, 0.3, seed=3)   # seeded
    assert bs.corpus_replay_records(corpus, 70, 0.0, seed=3) == []
    assert len(bs.corpus_replay_records(corpus[:10], 70, 0.5, seed=3)) == 10   # capped by the corpus
    with pytest.raises(ValueError, match='corpus_replay_share'):
        bs.corpus_replay_records(corpus, 70, 1.0, seed=3)


def test_build_sampling_splits_the_pool_over_ranks_once_each_and_merges_one_cache(tmp_path, monkeypatch):
    """Three ranks (threads sharing a barrier): every uncached question is sampled exactly once,
    by one rank; every rank gets every question's rows in item order; the parts join the one
    cache, so a second build samples nothing."""
    world, calls, lock = 3, [], threading.Lock()

    def sample_and_grade(model, tok, items, mode, n=1, seed=None, batch_size=None, **kw):
        assert batch_size == 4 and len(items) <= 2   # bounded: chunk_items questions at a time
        with lock:
            calls.extend(it['id'] for it in items)
        return graded_rows(items, n, seed)
    monkeypatch.setattr(bs, 'sample_and_grade', sample_and_grade)
    items = [{'id': f'q{i}', 'question': f'Q{i}', 'answer': '1'} for i in range(11)]
    cache = str(tmp_path / 'cache.jsonl')
    kw = dict(n_samples=2, temperature=0.3, top_p=0.9, max_new_tokens=8, seed=100, chunk_items=2, batch_size=4)
    bs.sample_base_answers(None, None, items[:2], cache, 'base', **kw)     # two questions cached before
    calls.clear()
    monkeypatch.setattr(bs, 'barrier', threading.Barrier(world, timeout=30).wait)
    results = [None] * world

    def run(rank):
        results[rank] = bs.sample_base_answers(None, None, items, cache, 'base', rank=rank, world=world, **kw)
    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == sorted(it['id'] for it in items[2:])           # once each, cached ones skipped
    for rows in results:
        assert [r['id'] for r in rows] == [it['id'] for it in items for _ in range(2)]
    assert not list(tmp_path.glob('cache.jsonl.rank*'))                    # parts merged and removed
    calls.clear()
    monkeypatch.setattr(bs, 'barrier', lambda: None)
    bs.sample_base_answers(None, None, items, cache, 'base', **kw)
    assert calls == []                                                     # the one cache holds them all
