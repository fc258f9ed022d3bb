"""Test helper (not a test): runs train_chrpo.main() with rollout rewards replaced by a
deterministic pseudo-random function of the rollout, so that a random tiny model still
gets a non-zero policy gradient, and records the question ids each rank samples
(questions.rank{r}.jsonl in out_dir). Used under torchrun (2 ranks) and for kill/resume.

    python tests/chrpo_worker.py --init_from=DIR --rl_path=... --teacher_path=... [--key=value ...]
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_chrpo  # noqa: E402
from configurator import apply_config  # noqa: E402


def fake_reward(sample, teacher):
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


if __name__ == '__main__':
    import evaluate
    train_chrpo.rollout_reward = fake_reward
    apply_config(vars(train_chrpo), sys.argv[1:])
    evaluate.sample_and_grade = record_questions(evaluate.sample_and_grade)
    die_after = int(os.environ.get('CHRPO_DIE_AFTER_CKPT', '0'))
    if die_after:  # simulate a kill right after the die_after-th checkpoint is written
        import common
        real_save, count = common.save_checkpoint, [0]

        def save_then_die(*a, **k):
            out = real_save(*a, **k)
            count[0] += 1
            if count[0] == die_after:
                os._exit(9)
            return out
        common.save_checkpoint = save_then_die
    train_chrpo.main()
