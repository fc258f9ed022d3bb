# Tiny compressor (CPU, about a minute of training on 2 cores): a 2-layer bidirectional
# Qwen3 trained from scratch on the embedded annotated corpus.
#   python train_compressor.py config/tiny_compressor.py
# (then build the mixed-ratio SFT set with it: python build_sft_data.py config/tiny_sft_data.py)
out_dir = 'out/compressor'
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
