# Stage 2 at paper scale: full fine-tuning of Qwen3-1.7B on the mixed-ratio set (about 60k
# examples: 12k per ratio), paper hyperparameters: lr 2e-5, cosine, warmup 5%, wd 0.05,
# 3 epochs, max length 6144, effective batch 64, bf16, prompt tokens masked.
#   torchrun --standalone --nproc_per_node=8 train_sft.py config/qwen3_1p7b_sft.py
#   python train_sft.py config/qwen3_1p7b_sft.py                       # one GPU: the same run
# Effective batch 64 on any number of GPUs: global_batch_size = 64 = batch_size x accumulation
# x GPUs (8 GPUs: 4 micro-batches of 2 each, 1 GPU: 32). Memory plan (python memplan.py
# config/qwen3_1p7b_sft.py, printed by the script too): fp32 master weights + grads + AdamW =
# 25.6 GiB a GPU (+ 6.4 GiB of DDP buckets on 8); with activation checkpointing 2 x 6144
# tokens hold 4.3 GiB of activations instead of 39: 37.1 GiB on 1 GPU, 43.5 on 8 (without it
# 71.9 and 78.3 of 79.2). --fsdp=True shards the rest when a larger model does not fit.
out_dir = 'out/qwen3_1p7b_sft'
init_from = 'Qwen/Qwen3-1.7B'
data_path = 'out/data/sft_mixed.jsonl'
val_path = ''
tokenizer_path = 'Qwen/Qwen3-1.7B'   # tokenizer.load_tokenizer appends the six budget tokens
default_mode = 'none'
max_len = 6144
num_epochs = 3.0                      # sets max_iters from the data set size
max_iters = 2813                      # 3 * 60000 / 64, used only if num_epochs = 0
batch_size = 2                        # per GPU micro-batch (2 x 6144 tokens at most)
global_batch_size = 64                # the paper's effective batch
learning_rate = 2e-5
min_lr_ratio = 0.0                    # cosine to zero
warmup_frac = 0.05
weight_decay = 0.05
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
autocast_dtype = 'bfloat16'           # fp32 master weights, bf16 matmuls
activation_checkpointing = True       # without it: 39 GiB of activations, 0.9 GiB spare on 8 GPUs (memplan)
fsdp = False
compile = False
log_interval = 10
eval_interval = 0
ckpt_interval = 500
