# Paper-scale mixed-ratio SFT set: the reasoning model (Qwen3-1.7B) answers the SFT pool, the
# compressor of config/qwen3_0p6b_compressor.py compresses its correct own CoTs.
#   python build_sft_data.py config/qwen3_1p7b_sft_data.py
compressor_ckpt = 'out/compressor_0p6b/ckpt'
base_ckpt = 'Qwen/Qwen3-1.7B'
n_samples = 1
temperature = 0.7
top_p = 0.9
max_new_tokens = 4096
compress_batch_size = 32
