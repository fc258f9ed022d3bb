"""
Benchmark loaders: the evaluation questions as dict(id, question, answer[, difficulty]) from
a local .jsonl / .json / .parquet file, the synthetic corpus, or a hub dataset (GSM8K,
MATH-500, AMC23, MetaMathQA: their field layouts are normalized here).

    from benchmarks import load_benchmark
    items = load_benchmark('synthetic', 'test', data_dir='out/data')   # out/data/test.jsonl
    items = load_benchmark('gsm8k')                                    # hub (HF_HUB_OFFLINE=1: cache only)
    items = load_benchmark('path/to/my_questions.jsonl')

Any malformed record raises 'file:line: what is wrong'.
"""
import json
import os
import re

from common import is_hub_id, iter_jsonl
from data import DEFAULT_DATA_DIR
from grading import find_boxed

HUB_DATASETS = {  # short name -> (hub dataset id, subfolder/config hint, default split)
    'gsm8k': ('openai/gsm8k', 'main', 'test'),
    'math500': ('HuggingFaceH4/MATH-500', None, 'test'),
    'amc23': ('math-ai/amc23', None, 'test'),
    'metamath': ('meta-math/MetaMathQA', None, 'train'),
}


def _last_boxed(text):
    """The last \\boxed{..} of a MATH solution, or None."""
    boxes = find_boxed(text)
    return boxes[-1].strip() if boxes else None


def _number_text(x):
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x).strip()


def normalize_benchmark_record(rec, where, index):
    """(id, question, answer[, difficulty]) from GSM8K / MATH / AMC / MetaMathQA / synthetic fields."""
    rid = str(rec.get('id', rec.get('unique_id', index)))
    if 'query' in rec and 'response' in rec:  # MetaMathQA
        m = re.search(r'The answer is:?\s*(.+?)\s*$', rec['response'].strip(), re.S)
        if not m:
            raise ValueError(f"{where}: MetaMathQA response has no 'The answer is:'")
        return {'id': rid, 'question': rec['query'], 'answer': m.group(1).strip().rstrip('.')}
    question = rec.get('question', rec.get('problem'))
    if not isinstance(question, str):
        raise ValueError(f"{where}: no 'question' or 'problem' text field (keys: {sorted(rec)})")
    answer = rec.get('answer')
    if isinstance(answer, str) and '####' in answer:  # GSM8K: rationale, then '#### 42'
        answer = answer.split('####')[-1].strip().replace(',', '')
    if answer is None and isinstance(rec.get('solution'), str):  # MATH without an answer field
        answer = _last_boxed(rec['solution'])
        if answer is None:
            raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"{where}: no 'answer' field (keys: {sorted(rec)})")
    out = {'id': rid, 'question': question, 'answer': _number_text(answer)}
    # difficulty: the synthetic corpus' step count, MATH's 'level' ("Level 3"), for accuracy by difficulty
    level = rec.get('difficulty', rec.get('level'))
    if level is not None:
        m = re.search(r'\d+', str(level))
        out['difficulty'] = int(m.group()) if m else level
    return out


def _hub_files(repo_id, split):
    from huggingface_hub import snapshot_download
    try:  # offline-aware: HF_HUB_OFFLINE=1 reads the cache only
        folder = snapshot_download(repo_id, repo_type='dataset', allow_patterns=['*.jsonl', '*.json', '*.parquet'])
    except Exception as e:
        raise FileNotFoundError(f"dataset '{repo_id}': not in the local cache and the hub download failed "
                                f"({type(e).__name__}: {e})") from None
    files = []
    for root, _, names in os.walk(folder):
        files += [os.path.join(root, n) for n in names if n.endswith(('.jsonl', '.json', '.parquet'))]
    chosen = sorted(f for f in files if split in os.path.basename(f) or f'/{split}/' in f)
    if not chosen:
        raise FileNotFoundError(f"dataset '{repo_id}': no file for split '{split}' among {sorted(files)}")
    return chosen


def _read_records(path):
    """(where, record) pairs from a .jsonl, .json (list or {'data': [...]}) or .parquet file."""
    if path.endswith('.parquet'):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading parquet needs pyarrow (`pip install -r requirements.txt`)") from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    if path.endswith('.json'):
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        data = data.get('data', data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of records or {{'data': [...]}}")
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    return [(f"{path}:{lineno}", r) for lineno, r in iter_jsonl(path)]


def load_benchmark(name_or_path, split='test', data_dir=DEFAULT_DATA_DIR):
    """list of dict(id, question, answer) from a local .jsonl/.json/.parquet file, the
    synthetic corpus ('synthetic' -> data_dir/{split}.jsonl), a short name in HUB_DATASETS,
    or a hub dataset id. Any malformed record raises 'file:line: what is wrong'."""
    if name_or_path == 'synthetic':
        paths = [os.path.join(data_dir, f'{split}.jsonl')]
        if not os.path.isfile(paths[0]):
            raise FileNotFoundError(f"{paths[0]} not found: run `python corpus.py` first")
    elif os.path.isfile(name_or_path):
        paths = [name_or_path]
    elif name_or_path in HUB_DATASETS or is_hub_id(name_or_path):
        repo_id, sub, default_split = HUB_DATASETS.get(name_or_path, (name_or_path, None, split))
        paths = _hub_files(repo_id, split if name_or_path not in HUB_DATASETS else (split or default_split))
        if sub:
            paths = [p for p in paths if f'/{sub}/' in p] or paths
    else:
        raise FileNotFoundError(f"benchmark '{name_or_path}': not a file, not 'synthetic', not one of "
                                f"{sorted(HUB_DATASETS)}, not a hub id")
    records, seen_ids = [], set()
    for path in paths:
        for where, rec in _read_records(path):
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            r = normalize_benchmark_record(rec, where, f"{os.path.basename(path)}-{len(records)}")
            if r['id'] in seen_ids:  # ids must be unique for per-sample result files
                r['id'] = f"{r['id']}-{len(records)}"
            seen_ids.add(r['id'])
            records.append(r)
    return records
