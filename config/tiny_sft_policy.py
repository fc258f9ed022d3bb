# POLICY warm-up SFT of the embedded default: continues the mixed-ratio SFT model on the
# mixed-ratio set plus <COMP_AUTO> items answered with the teacher budget g* (built by
# build_sft_data.py (config/tiny_policy_data.py) once train_chrpo.py --stage=teacher has labelled the RL
# pool). Its result is the 'sft' model of the report and CHRPO's starting point.
#   torchrun --standalone --nproc_per_node=2 train_sft.py config/tiny_sft_policy.py
out_dir = 'out/sft'
init_from = 'out/sft_ratio/ckpt'
data_path = 'out/data/sft_policy.jsonl'
val_path = ''
tokenizer_path = 'out/data/tokenizer'
max_len = 512
max_iters = 150
batch_size = 16               # per rank
activation_checkpointing = False
result_digit_weight = 5.0     # as config/tiny_base.py and config/tiny_sft.py
budget_choice_weight = 10.0   # a POLICY item's one decision token counts 10x: at 1x the round learned the labels' majority
                              # more than their split by difficulty, and CHRPO's choice then settled by seed (seed 1337:
                              # 0.2 for 62% of samples, seed 2: 0.4 for all, 29% apart in think tokens); at 10x both seeds' CHRPO
                              # chose 0.2 for 1-step and 0.4 for 2-5 step questions, 79 / 75 think tokens (README, Choices)
compile = True                # compiled blocks + bf16 autocast, as config/tiny_sft.py; the inductor
autocast_dtype = 'bfloat16'   # cache is warm from the earlier stages (its first 10 steps: 9 s)
learning_rate = 2e-4          # a short continuation: at 5e-4 (half the mixed-ratio SFT lr) the round cost the fixed
                              # modes what mixed-ratio SFT had kept (seed 1337: 1.0 96.0 -> 94.7, 0.4 95.2 -> 92.8);
                              # at 2e-4 96.1 and 94.3, POLICY alike (77.7 against 78.9). README, Choices
min_lr_ratio = 0.1
warmup_frac = 0.05
weight_decay = 0.05
log_interval = 10
eval_interval = 0
ckpt_interval = 50
