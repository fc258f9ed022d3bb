# Tiny compressor (CPU, about a minute of training on 2 cores): a 2-layer bidirectional
# Qwen3 trained from scratch on the embedded annotated corpus, then the build step.
#   python train_compressor.py config/tiny_compressor.py
out_dir = 'out/compressor'
stage = 'all'
init_from = 'scratch'
n_layer = 2
n_embd = 128
n_head = 4
n_kv_head = 2
intermediate_size = 384
max_len = 384
max_train_records = 2000
max_val_records = 200
batch_size = 8
max_iters = 150
learning_rate = 2e-3
warmup_frac = 0.06
weight_decay = 0.01
grad_clip = 1.0
loss = 'ce'
eval_interval = 25
patience = 2
# build step
base_ckpt = 'out/base/ckpt'
build_max_questions = 1500  # of the 2000-question SFT pool
build_n_samples = 1
build_temperature = 0.3       # own CoTs at low temperature: at 0.7 correct answers often came from CoTs
                              # that misread the question (wrong name or start value), which SFT then imitates
build_top_p = 0.9
build_max_new_tokens = 384
compress_ratios = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
# ^ the paper compresses at 0.1..0.9 in steps of 0.1; half steps fill more of the +-0.05 buckets
#   (with 0.1 steps ~40% of the tiny base model's CoTs missed a bucket and were lost)
# POLICY warm-up round (the second build, once teacher budgets exist; speedrun's policy_data stage)
warmup_fraction = 0.35        # warm-up items: up to this share of the kept fixed-mode records
warmup_mix = 'natural'        # the tiny teacher labels are far from the paper's mix: keep them as they are
replay_fraction = 0.15        # keep 15% of the fixed-mode records beside the warm-up items
