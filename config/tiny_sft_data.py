# The mixed-ratio SFT set of the CPU speedrun: the tiny base model answers the SFT pool, the
# tiny compressor compresses its correct own CoTs (speedrun's compressor stage, after training).
#   python build_sft_data.py config/tiny_sft_data.py      # -> out/data/sft_mixed.jsonl
compressor_ckpt = 'out/compressor/ckpt'
base_ckpt = 'out/base/ckpt'
pool_path = 'out/data/sft_pool.jsonl'
out_path = 'out/data/sft_mixed.jsonl'
max_questions = 1500          # of the 2000-question SFT pool
n_samples = 1
temperature = 0.7             # own CoTs at the evaluation's temperature: at 0.3 they sharpened the base's style
                              # by seed (one ran 5% longer than its T 0.7 answers, so sft 1.0 wrote 1.10x base
                              # and missed the 0.1 budget band; another restated 0.53 of its steps, not 0.7)
top_p = 0.9
max_new_tokens = 384
compress_ratios = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
# ^ the paper compresses at 0.1..0.9 in steps of 0.1; half steps fill more of the +-0.05 buckets
#   (with 0.1 steps ~40% of the tiny base model's CoTs missed a bucket and were lost)
corpus_path = 'out/data/train.jsonl'
corpus_replay_share = 0.3     # 30% of the set replays the base's corpus in mode 'none': without it sft 1.0
                              # was 83.4 (base 89.1); with it 86.2 after mixed-ratio SFT (paired +2.8 +- 2.4)
