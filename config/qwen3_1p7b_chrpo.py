# CHRPO at paper scale: Qwen3-1.7B after mixed-ratio SFT, on GPUs.
#   torchrun --standalone --nproc_per_node=8 train_chrpo.py config/qwen3_1p7b_chrpo.py
#   python train_chrpo.py config/qwen3_1p7b_chrpo.py     # one GPU: the same updates, 8x the rollout time
# Memory plan (python memplan.py config/qwen3_1p7b_chrpo.py, 512-token prompts; the script
# prints it for the real prompts): rollouts 60.3 GiB on 1 GPU / 66.7 on 8 (fp32 master weights
# and AdamW stay resident; a 35 GiB KV cache for 64 rows of 4.6k tokens), update 38.6 / 45.0,
# teacher labels 51.7 / 31.7, of 79.2.
# The paper gives the reward design but not the RL hyperparameters; the values marked
# "ours" are our choices (GRPO/DAPO-style defaults for a 1.7B model), not the paper's.
out_dir = 'out/qwen3_1p7b_chrpo'
init_from = 'out/qwen3_1p7b_sft/ckpt'
rl_path = 'data/rl_questions.jsonl'   # e.g. MetaMathQA / GSM8K-train questions: {id, question, answer}
teacher_path = 'out/qwen3_1p7b_chrpo/teacher_budgets.jsonl'
teacher_samples = 4                   # ours: k samples per (question, budget)
teacher_temperature = 0.7             # the paper's decoding
teacher_top_p = 0.9
max_iters = 500                       # ours
questions_per_step = 64               # ours: global, 8 per GPU
group_size = 8                        # ours: G rollouts per question -> 512 rollouts a step
max_new_tokens = 4096                 # the paper's generation cap
temperature = 1.0                     # ours: rollouts at T=1, top_p=1 (unbiased behaviour log-probs)
learning_rate = 1e-6                  # ours
warmup_iters = 10                     # ours
mu = 2                                # ours: mini-batch updates per rollout batch
ctrl_token_weight = 1.0               # ours, untuned here: the tiny run needed 40 (README, Choices) to keep its budget
                                      # choice on R_ctrl against ~90 body tokens; here a rollout has ~1000s. Read the
                                      # choice's share by difficulty from save_rollouts before raising it
save_rollouts = True                  # rollouts.jsonl: ~250 bytes a rollout, ~130 KB a step
micro_batch_tokens = 16384            # padded tokens per forward/backward per GPU (~4 rollouts of 4.6k)
activation_checkpointing = True       # without it the update needs 85-91 GiB (52 GiB of activations)
sample_batch_size = 64                # rollout rows decoded at once per GPU: 8 questions x 8 (the KV cache)
eps_low = 0.2                         # ours (DAPO clip-higher)
eps_high = 0.28
kl_coef = 0.0                         # off, as in DAPO; 1e-3 keeps a k3 KL to the SFT model
ckpt_interval = 25
autocast_dtype = 'bfloat16'           # fp32 master weights + AdamW, bf16 autocast and a bf16 sampling copy
