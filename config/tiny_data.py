# the embedded default corpus for the CPU speedrun: python corpus.py config/tiny_data.py
out_dir = 'out/data'
seed = 1337
n_train, n_val, n_test, n_sft_pool, n_rl_pool = 20000, 500, 1000, 2000, 1000  # 1000 test questions: +-1 point needs them
min_steps, max_steps = 1, 5   # difficulty = number of steps, balanced
filler = 0.72                 # filler share of CoT chars at difficulty 3
filler_slope = 0.08           # less filler per extra step: kept share ~0.19 (d=1,2) .. 0.39 (d=5), so 0.2 fits easy problems only;
                              # 0.04 (tried, not kept yet) leaves 0.4 room for restated actions; README Choices
bare_step_share = 0.3         # 30% of the steps state only their equation: the model must compute "a op b =" without
                              # its restated action, as a compressed CoT asks of it (README, Choices)
max_value, max_operand = 99, 20
vocab_size = 2048
