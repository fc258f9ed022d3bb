"""
Small shared helpers for the training and evaluation scripts: distributed setup under
torchrun (setup_dist, print0, all_reduce_sum, barrier), seeding, RNG state and the seeded
per-epoch permutation, atomic file writes, jsonl files (a strict reader naming file:line,
and for files appended to by killable processes an append-and-flush writer with a reader
that drops a torn last line), the hub-id test, and the checkpoint folder: an HF-format
model folder with the training state beside the weights (save_checkpoint, find_checkpoint,
load_train_state). The weights themselves are loaded by model.py's Qwen3.from_pretrained(folder).

Not run directly. A training script does:

    from common import setup_dist, print0, find_checkpoint, load_train_state, save_checkpoint
    rank, world_size, local_rank, device = setup_dist()
    ckpt = find_checkpoint(out_dir)                        # newest complete folder, or None
    train_state = load_train_state(ckpt) if ckpt else None
    save_checkpoint(out_dir, model, tokenizer, train_state={'step': step, ...})  # rank 0
"""
import datetime
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile

import numpy as np
import torch
import torch.distributed as dist

# -----------------------------------------------------------------------------
# distributed


def setup_dist(device_type='auto', timeout_s=None):
    """Initialize torch.distributed when launched by torchrun (RANK in env): nccl on CUDA,
    gloo on CPU. timeout_s: how long a collective (a barrier) waits before the process group
    aborts (None: torch's default, 10 minutes for NCCL). Returns (rank, world_size, local_rank, device)."""
    if device_type == 'auto':
        device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
    if 'RANK' not in os.environ:
        return 0, 1, 0, torch.device(device_type)
    rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if device_type == 'cuda':
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')
    if not dist.is_initialized():
        timeout = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
        dist.init_process_group('nccl' if device_type == 'cuda' else 'gloo', timeout=timeout)
    return rank, world_size, local_rank, device


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def print0(*args, **kwargs):
    if is_main():
        print(*args, **{'flush': True, **kwargs})  # a caller's own flush= must not collide


def all_reduce_sum(values, device='cpu'):
    """Sum a list of floats across ranks (identity in one process)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def barrier():
    if dist.is_initialized():
        dist.barrier()


def cleanup_dist():
    if dist.is_initialized():
        dist.destroy_process_group()


# -----------------------------------------------------------------------------
# seeding


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(n, seed, epoch):
    """The order of epoch `epoch` of n examples: a permutation that is a pure function of
    (seed, epoch), drawn from its own generator (never the global RNG), so a run resumed at
    any step replays exactly the order an uninterrupted run would have seen."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


# -----------------------------------------------------------------------------
# atomic writes: write to a temp file in the same folder, fsync, rename over the target.
# A process killed at any moment leaves either the old file or the new one, never half.


def atomic_write_bytes(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-' + os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def atomic_torch_save(obj, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-' + os.path.basename(path))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# -----------------------------------------------------------------------------
# jsonl files: one JSON object a line. read_jsonl / iter_jsonl for files that are written
# whole (any bad line is an error naming file:line); append_jsonl + read_jsonl_tolerant for
# logs and caches that a killed process may leave with a torn last line.


def _json_object(line, path, lineno):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})') from None
    if not isinstance(row, dict):
        raise ValueError(f'{path}:{lineno}: expected a JSON object, got {type(row).__name__}')
    return row


def iter_jsonl(path):
    """(line number, record) for each non-blank line of a jsonl file; a bad line raises
    ValueError naming file:line and what is wrong."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, _json_object(line, path, lineno)


def read_jsonl(path):
    """Records of a jsonl file (blank lines skipped); a bad line raises ValueError naming
    file:line and what is wrong."""
    return [row for _, row in iter_jsonl(path)]


def write_jsonl(path, rows):
    atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in rows))


def drop_torn_tail(path):
    """Cut a torn last line (no trailing newline: a kill mid-append) off `path`, so that the
    next append starts a fresh line instead of gluing onto the fragment."""
    if not os.path.exists(path):
        return
    with open(path, 'rb+') as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b'\n':
            return
        f.seek(0)
        f.truncate(f.read().rfind(b'\n') + 1)


def append_jsonl(path, *rows):
    """Append rows (one line each) in one write and flush: a killed process loses at most the
    lines being written; readers (read_jsonl_tolerant) drop a torn last line, and the next
    append cuts it off."""
    drop_torn_tail(path)
    with open(path, 'a') as f:
        f.write(''.join(json.dumps(row) + '\n' for row in rows))
        f.flush()


def read_jsonl_tolerant(path):
    """read_jsonl for a file appended to by append_jsonl: a missing file has no records, and a
    torn last line (one without its newline, as drop_torn_tail defines it: a kill mid-append)
    is dropped whatever it holds. Any other bad line is still an error naming file:line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split('\n')
    lines.pop()  # '' after the final newline, or the torn last line
    return [_json_object(line, path, lineno) for lineno, line in enumerate(lines, 1) if line.strip()]


# -----------------------------------------------------------------------------
# checkpoints: {out_dir}/ckpt is an HF-format folder (config.json, model.safetensors,
# tokenizer files) that transformers loads, with train_state.pt (optimizer, step, RNG)
# beside the weights. It is written as {out_dir}/ckpt.tmp and swapped in with renames:
#   ckpt -> ckpt.old, ckpt.tmp -> ckpt, rm ckpt.old
# A kill between the two renames leaves ckpt.old, which find_checkpoint falls back to.


def is_hub_id(name):
    """True when `name` names a Hugging Face hub repository ('Qwen/Qwen3-1.7B', 'openai/gsm8k')
    rather than a local path: 'owner/name' with exactly one '/', not starting with '.' or '/',
    and nothing at that path on disk (a local file or folder always wins)."""
    return (isinstance(name, str) and name.count('/') == 1 and not name.startswith(('.', '/'))
            and not name.endswith('/') and not os.path.exists(name))


def checkpoint_digest(path):
    """16 hex digits of sha1 over a checkpoint folder's weight files and config.json: what decides
    the samples a model draws. Sample caches keyed by it reuse the answers of the same weights
    wherever they lie, and never those of a checkpoint retrained in place (a path alone would).
    Anything that is not a folder holding weight files (a hub id) is keyed by its path."""
    files = sorted(os.listdir(path)) if os.path.isdir(path) else []
    hashed = [f for f in files if f.endswith(('.safetensors', '.bin')) or f == 'config.json']
    if hashed in ([], ['config.json']):  # no weight files
        return os.path.abspath(path) if os.path.exists(path) else path
    stamp = tuple((f, st.st_size, st.st_mtime_ns) for f in hashed for st in [os.stat(os.path.join(path, f))])
    return _hash_files(os.path.abspath(path), stamp)


@functools.cache
def _hash_files(folder, stamp):
    """sha1 of the files named in stamp, read once per (folder, names, sizes, mtimes)."""
    h = hashlib.sha1()
    for name, _, _ in stamp:
        h.update(name.encode())
        with open(os.path.join(folder, name), 'rb') as f:
            for block in iter(lambda: f.read(1 << 22), b''):
                h.update(block)
    return h.hexdigest()[:16]


def find_checkpoint(out_dir):
    """The newest complete checkpoint folder under out_dir, or None."""
    for name in ('ckpt', 'ckpt.old'):
        path = os.path.join(out_dir, name)
        if os.path.isfile(os.path.join(path, 'COMPLETE')):
            return path
    return None


def save_checkpoint(out_dir, model, tokenizer=None, train_state=None, extra_files=None):
    """Write model (+ tokenizer, + train_state dict) to {out_dir}/ckpt atomically. Call on
    rank 0 only. `model` must have save_pretrained (model.py's Qwen3)."""
    final = os.path.join(out_dir, 'ckpt')
    tmp, old = final + '.tmp', final + '.old'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save(tmp)
    if train_state is not None:
        torch.save(train_state, os.path.join(tmp, 'train_state.pt'))
    for name, text in (extra_files or {}).items():
        with open(os.path.join(tmp, name), 'w') as f:
            f.write(text)
    with open(os.path.join(tmp, 'COMPLETE'), 'w') as f:
        f.write('ok\n')
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_train_state(ckpt_dir):
    path = os.path.join(ckpt_dir, 'train_state.pt')
    if not os.path.exists(path):
        return None
    return torch.load(path, map_location='cpu', weights_only=False)


def rng_state():
    return {'python': random.getstate(), 'numpy': np.random.get_state(),
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state):
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
