# Paper-scale compressor: Qwen3-0.6B made bidirectional (stands in for the paper's
# Longformer-large) with a fresh 2-label head, trained on the annotated CoTs.
#   torchrun --standalone --nproc_per_node=8 train_compressor.py config/qwen3_0p6b_compressor.py
# (then: python build_sft_data.py config/qwen3_1p7b_sft_data.py)
# Hyperparameters from the paper: AdamW lr 2e-5, wd 0.01, linear schedule with 6% warmup,
# grad clip 1.0, 4096 tokens, early stopping on validation macro-F1.
out_dir = 'out/compressor_0p6b'
init_from = 'Qwen/Qwen3-0.6B'
tokenizer_path = 'Qwen/Qwen3-0.6B'
train_path = 'out/data/train.jsonl'
val_path = 'out/data/val.jsonl'
max_len = 4096
max_question_tokens = 512
batch_size = 4               # per GPU; 8 GPUs -> 32 sequences per step
max_iters = 6000
learning_rate = 2e-5
weight_decay = 0.01
warmup_frac = 0.06
grad_clip = 1.0
loss = 'ce'
eval_interval = 500
patience = 3
autocast_dtype = 'bfloat16'
