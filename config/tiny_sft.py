# Stage 2 of the embedded default: mixed-ratio SFT of the tiny base model on the compressed
# CoTs with budget tokens (build_sft_data.py writes out/data/sft_mixed.jsonl: records with a
# 'mode'). The POLICY (<COMP_AUTO>) warm-up items come in a later round: config/tiny_sft_policy.py.
#   torchrun --standalone --nproc_per_node=2 train_sft.py config/tiny_sft.py
out_dir = 'out/sft_ratio'     # the mixed-ratio model; the POLICY warm-up (config/tiny_sft_policy.py) writes out/sft
init_from = 'out/base/ckpt'
data_path = 'out/data/sft_mixed.jsonl'
val_path = ''                 # sft_mixed has no held-out split; evaluate.py measures the result
tokenizer_path = 'out/data/tokenizer'
default_mode = 'none'         # records carry their own 'mode'
max_len = 512
max_iters = 1200              # ~2 epochs of the ~9650 mixed records; 600 left sft 1.0 at 80.1 (base 89.1),
                              # 1200 gave 84.7 and lifted chrpo POLICY from 80.3 to 83.0
batch_size = 16               # per rank; 2 ranks -> 32 examples a step
global_batch_size = 0         # 0 = batch_size x ranks: no accumulation
activation_checkpointing = False
result_digit_weight = 5.0     # as config/tiny_base.py: compressed modes must compute "a op b =" with less context
compile = True                # compiled blocks + bf16 autocast, as config/tiny_base.py (mixed-ratio SFT: 465 -> 381 s);
autocast_dtype = 'bfloat16'   # the inductor cache is warm from the base stage's compile
learning_rate = 1e-3          # lower than from scratch; 3e-4 (tried) was worse: the modes blurred (1.0 wrote
                              # 0.73 of the base length) and 1.0 accuracy fell 10-20 points on 3-5 step problems
min_lr_ratio = 0.1
warmup_frac = 0.05
weight_decay = 0.05
log_interval = 10
eval_interval = 0
ckpt_interval = 100
