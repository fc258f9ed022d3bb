# Stage 2 at paper scale: full fine-tuning of Qwen3-1.7B on the mixed-ratio set (about 60k
# examples: 12k per ratio), paper hyperparameters: lr 2e-5, cosine, warmup 5%, wd 0.05,
# 3 epochs, max length 6144, effective batch 64, bf16, prompt tokens masked.
#   torchrun --standalone --nproc_per_node=8 train_sft.py config/qwen3_1p7b_sft.py
# Effective batch = batch_size * grad_accum_steps * GPUs = 2 * 4 * 8 = 64; on fewer GPUs
# raise grad_accum_steps to keep 64. With 8 x 80 GB DDP fits (1.7B fp32 master weights +
# AdamW = ~27 GB a GPU); --fsdp=True shards them when it does not.
out_dir = 'out/qwen3_1p7b_sft'
init_from = 'Qwen/Qwen3-1.7B'
data_path = 'out/data/sft_mixed.jsonl'
val_path = ''
tokenizer_path = 'Qwen/Qwen3-1.7B'   # tokenizer.load_tokenizer appends the six budget tokens
default_mode = 'none'
max_len = 6144
num_epochs = 3.0                      # sets max_iters from the data set size
max_iters = 2813                      # 3 * 60000 / 64, used only if num_epochs = 0
batch_size = 2
grad_accum_steps = 4
learning_rate = 2e-5
min_lr_ratio = 0.0                    # cosine to zero
warmup_frac = 0.05
weight_decay = 0.05
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
autocast_dtype = 'bfloat16'
fsdp = False
compile = False
log_interval = 10
eval_interval = 0
ckpt_interval = 500
