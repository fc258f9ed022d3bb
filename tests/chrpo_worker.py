"""Test helper (not a test): runs train_chrpo.main() with rollout rewards replaced by a
deterministic pseudo-random function of the rollout, so that a random tiny model still
gets a non-zero policy gradient, and records the question ids each rank samples
(questions.rank{r}.jsonl in out_dir). At the end every rank writes the digest of its weights
(param_digest.rank{r}.txt in out_dir). Used under torchrun (2 ranks) and for kill/resume:
CHRPO_DIE_AFTER_CKPT=k exits the process right after the k-th checkpoint is written.

    python tests/chrpo_worker.py --init_from=DIR --rl_path=... --teacher_path=... [--key=value ...]
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_chrpo  # noqa: E402
from configurator import apply_config  # noqa: E402
from digest import write_param_digest  # noqa: E402


def fake_reward(sample, teacher, **reward_kw):
    # deterministic in the rollout's tokens: the same rollout gets the same rewards on any rank/run
    h = hashlib.sha256(str(sample['tokens']).encode()).digest()
    return h[0] / 255.0, h[1] / 255.0, {'valid': True, 'c': None, 'r': None}


def record_questions(real):
    # each rank appends the ids of the questions it sampled, one line per call (tests compare ranks)
    def wrapped(model, tok, items, *a, **k):
        rank = os.environ.get('RANK', '0')
        with open(os.path.join(train_chrpo.out_dir, f'questions.rank{rank}.jsonl'), 'a') as f:
            f.write(json.dumps([it['id'] for it in items]) + '\n')
        return real(model, tok, items, *a, **k)
    return wrapped


def die_after(n_checkpoints, save_checkpoint):
    # a kill right after the n-th checkpoint is on disk
    count = [0]

    def save_then_die(*a, **k):
        out = save_checkpoint(*a, **k)
        count[0] += 1
        if count[0] == n_checkpoints:
            os._exit(9)
        return out
    return save_then_die


if __name__ == '__main__':
    apply_config(vars(train_chrpo), sys.argv[1:])
    # patched where train_chrpo looks them up (its own module globals)
    train_chrpo.rollout_reward = fake_reward
    train_chrpo.sample_and_grade = record_questions(train_chrpo.sample_and_grade)
    if int(os.environ.get('CHRPO_DIE_AFTER_CKPT', '0')):
        train_chrpo.save_checkpoint = die_after(int(os.environ['CHRPO_DIE_AFTER_CKPT']), train_chrpo.save_checkpoint)
    model = train_chrpo.main()
    write_param_digest(model, train_chrpo.out_dir)
