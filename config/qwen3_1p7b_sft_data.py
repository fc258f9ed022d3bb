# Paper-scale mixed-ratio SFT set: the reasoning model (Qwen3-1.7B) answers the SFT pool, the
# compressor of config/qwen3_0p6b_compressor.py compresses its correct own CoTs.
#   torchrun --standalone --nproc_per_node=8 build_sft_data.py config/qwen3_1p7b_sft_data.py
compressor_ckpt = 'out/compressor_0p6b/ckpt'
base_ckpt = 'Qwen/Qwen3-1.7B'
n_samples = 1
temperature = 0.7
top_p = 0.9
max_new_tokens = 4096
sample_batch_size = 128  # per GPU, as config/eval_qwen3_1p7b.py: KV cache 63 GiB at 512-token prompts (memplan);
                         # the script lowers it when the pool's longest prompt needs it
compress_batch_size = 32
