# the embedded default corpus for the CPU speedrun: python corpus.py config/tiny_data.py
out_dir = 'out/data'
seed = 1337
n_train, n_val, n_test, n_sft_pool, n_rl_pool = 20000, 500, 1000, 2000, 1000  # 1000 test questions: +-1 point needs them
min_steps, max_steps = 1, 5   # difficulty = number of steps, balanced
filler = 0.72                 # filler share of CoT chars at difficulty 3
filler_slope = 0.04           # less filler per extra step: decisive share of tokens ~0.2 (d=1,2) .. 0.34 (d=5); 0.08 (0.39 at d=5) left 0.4 no room for restated actions on 5-step CoTs (README Choices)
bare_step_share = 0.3         # 30% of the steps state only their equation: the model must compute "a op b =" without
                              # its restated action, as a compressed CoT asks of it (README, Choices)
max_value, max_operand = 99, 20
vocab_size = 2048
