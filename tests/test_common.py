"""common.py's shared definitions: the jsonl readers (strict, and tolerant of a torn last
line as drop_torn_tail defines it), the hub-id test every loader uses, and the seeded
per-epoch permutation both training loops draw their order from.
    python -m pytest -q tests/test_common.py
"""
import pytest

from common import append_jsonl, epoch_permutation, is_hub_id, iter_jsonl, read_jsonl, read_jsonl_tolerant


def test_strict_reader_names_file_and_line_and_counts_blank_lines(tmp_path):
    p = tmp_path / 'rows.jsonl'
    p.write_text('\n{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(str(p))) == [(2, {'a': 1}), (4, {'a': 2})]  # line numbers of the file, blanks counted
    p.write_text('{"a": 1}\n[1]\n{"a": 2}\n')
    for reader in (read_jsonl, read_jsonl_tolerant):  # a bad middle line is an error for both readers
        with pytest.raises(ValueError, match=r'rows\.jsonl:2: expected a JSON object, got list'):
            reader(str(p))


def test_tolerant_reader_drops_exactly_what_the_next_append_cuts(tmp_path):
    p = str(tmp_path / 'log.jsonl')
    assert read_jsonl_tolerant(p) == []  # nothing appended yet
    append_jsonl(p, {'a': 1}, {'a': 2})
    with open(p, 'a') as f:
        f.write('{"a": 3}')  # killed right before the newline: torn, although it parses
    assert read_jsonl_tolerant(p) == [{'a': 1}, {'a': 2}]
    append_jsonl(p, {'a': 4})  # cuts the torn line first: what the reader dropped is gone
    assert read_jsonl(p) == read_jsonl_tolerant(p) == [{'a': 1}, {'a': 2}, {'a': 4}]
    with open(p, 'a') as f:
        f.write('{"a": 5, "b"')  # torn mid-object
    assert read_jsonl_tolerant(p) == [{'a': 1}, {'a': 2}, {'a': 4}]
    with open(p, 'a') as f:
        f.write('\n')  # the same bytes, terminated: not torn but corrupt
    with pytest.raises(ValueError, match=r'log\.jsonl:4: invalid JSON'):
        read_jsonl_tolerant(p)


def test_hub_ids_are_owner_slash_name_and_a_local_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id('Qwen/Qwen3-1.7B') and is_hub_id('openai/gsm8k')
    for local in ('./Qwen/Qwen3', '/abs/path', 'out/base/ckpt', 'gsm8k', 'Qwen/', None):
        assert not is_hub_id(local), local
    (tmp_path / 'Qwen' / 'Qwen3-1.7B').mkdir(parents=True)  # a folder of that name here: the folder wins
    assert not is_hub_id('Qwen/Qwen3-1.7B')


def test_epoch_permutation_is_a_pure_function_of_seed_and_epoch():
    p = epoch_permutation(10, 3, 0)
    assert sorted(p) == list(range(10)) and p != list(range(10))
    assert p == epoch_permutation(10, 3, 0) != epoch_permutation(10, 3, 1) != epoch_permutation(10, 4, 1)
