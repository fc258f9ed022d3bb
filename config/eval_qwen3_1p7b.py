# Paper-scale evaluation (GPUs): Qwen3-1.7B as the base model, our SFT and CHRPO models,
# GSM8K / MATH-500 / AMC23, paper decoding (T 0.7, top-p 0.9, 4096 new tokens, 1 sample).
# torchrun --standalone --nproc_per_node=8 evaluate.py config/eval_qwen3_1p7b.py
out_dir = 'out/eval_qwen3_1p7b'
models = {'base': 'Qwen/Qwen3-1.7B', 'sft': 'out/qwen3_1p7b_sft/ckpt', 'chrpo': 'out/qwen3_1p7b_chrpo/ckpt'}
model_modes = {'base': ['base'],
               'sft': ['0.2', '0.4', '0.6', '0.8', '1.0', 'auto'],
               'chrpo': ['auto', '0.2', '0.4', '0.6', '0.8', '1.0']}
optional_models = ['chrpo']  # evaluate SFT before RL has finished
benchmarks = ['gsm8k', 'math500', 'amc23']  # benchmarks.HUB_DATASETS short names, or local jsonl paths
n_samples = 1
temperature = 0.7
top_p = 0.9
max_new_tokens = 4096
batch_size = 128  # rows decoded at once per GPU: KV cache 128 x (prompt + 4096) x 112 KiB = 63 GiB at 512-token
                  # prompts; `python memplan.py config/eval_qwen3_1p7b.py` fits 1 and 8 x 80 GB (6 GiB spare).
                  # evaluate.py lowers it further when the longest real prompt needs it (memory plan)
chunk_items = 256
param_dtype = 'bfloat16'
report_path = 'out/report_qwen3_1p7b.md'
cuda_graph = True  # static-shape decode on GPU
