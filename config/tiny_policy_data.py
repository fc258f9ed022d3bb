# The POLICY warm-up round of the CPU speedrun (its policy_data stage): once
# `train_chrpo.py --stage=teacher` has written the teacher budgets, the same build adds
# <COMP_AUTO> -> g* items. Goes after config/tiny_sft_data.py:
#   python build_sft_data.py config/tiny_sft_data.py config/tiny_policy_data.py   # -> out/data/sft_policy.jsonl
teacher_path = 'out/teacher/teacher_budgets.jsonl'
out_path = 'out/data/sft_policy.jsonl'
warmup_fraction = 0.35        # warm-up items: up to this share of the kept fixed-mode records
warmup_mix = 'natural'        # the tiny teacher labels are far from the paper's mix: keep them as they are
replay_fraction = 0.15        # keep 15% of the fixed-mode records beside the warm-up items
corpus_replay_share = 0.0     # the warm-up round replays fixed-mode records instead (replay_fraction)
