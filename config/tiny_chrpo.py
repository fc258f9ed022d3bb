# CHRPO on the embedded default (CPU, minutes), in two runs as speedrun.sh makes them: the teacher
# budgets come from the mixed-ratio model (the POLICY warm-up items are built from them), the loop
# starts from the warm-up SFT model (init_from):
#   python train_chrpo.py config/tiny_chrpo.py --stage=teacher --init_from=out/sft_ratio/ckpt --out_dir=out/teacher
#   python train_chrpo.py config/tiny_chrpo.py --stage=train
out_dir = 'out/chrpo'
init_from = 'out/sft/ckpt'
rl_path = 'out/data/rl_pool.jsonl'
teacher_path = 'out/teacher/teacher_budgets.jsonl'  # written by the teacher stage of speedrun.sh
max_rl_questions = 320
teacher_samples = 4           # k=2 labelled half the pool 0.2 on one lucky sample (see README)
teacher_solve_share = 0.75    # a budget solves a question when >= 3 of its 4 samples are correct: at 2 of 4,
                              # a 33%-accurate budget (0.4 on 5-step problems) passes 40% of the time by luck; at 3 of 4, 11%
max_iters = 100               # on the 2500-step base (warm-up lr 5e-4), 50 steps: 81 / -0.2 and 77 / -1.4 (seeds 1337 / 2);
                              # 100: 80 / -0.5 and 74 / -0.2, 62% / 65% fewer than base (README, Choices)
questions_per_step = 16
group_size = 8
max_new_tokens = 384
temperature = 0.7             # rollouts (and the loss) at the evaluation's temperature: at 1.0 the tiny
                              # model rambles (realized ratios 1.25-1.46 at <COMP_100>) and RL tunes a policy nobody runs
learning_rate = 1e-4
mu = 2
ctrl_token_weight = 40.0      # the budget choice counts as 40 of a rollout's ~90 response tokens: at 1 the body's
                              # updates pulled the choice to <COMP_40> against R_ctrl (2-step questions, where 0.2
                              # earns more R_ctrl, went 59% -> 6% 0.2); 97.3 / 97.2 against 96.2 / 96.2 (README, Choices)
micro_batch_tokens = 16384    # padded tokens per forward/backward: ~32 rollouts of ~450 tokens
activation_checkpointing = False
eps_low = 0.2
eps_high = 0.28
ckpt_interval = 5
