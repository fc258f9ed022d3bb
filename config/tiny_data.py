# the embedded default corpus for the CPU speedrun: python corpus.py config/tiny_data.py
out_dir = 'out/data'
seed = 1337
n_train, n_val, n_test, n_sft_pool, n_rl_pool = 20000, 500, 1000, 2000, 1000  # 1000 test questions: +-1 point needs them
min_steps, max_steps = 1, 5   # difficulty = number of steps, balanced
filler = 0.72                 # filler share of CoT chars at difficulty 3
filler_slope = 0.04           # less filler per extra step: 0.08 kept decisive shares ~0.19 (d=1,2) .. 0.39 (d=5), so the
                              # 0.4 budget had no room left on hard problems; 0.04 leaves it room (README, Choices)
bare_step_share = 0.3         # 30% of the steps state only their equation: the model must compute "a op b =" without
                              # its restated action, as a compressed CoT asks of it (README, Choices)
max_value, max_operand = 99, 20
vocab_size = 2048
