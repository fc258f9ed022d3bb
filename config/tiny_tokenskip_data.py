# The TokenSkip-style baseline's mixed-ratio SFT set (speedrun --paper's tokenskip_data stage):
# the same build as config/tiny_sft_data.py (same cached base answers, ratios, buckets, corpus
# replay), but each CoT is compressed by tokenskip.py's question-agnostic surprisal score.
# Goes after config/tiny_sft_data.py:
#   python build_sft_data.py config/tiny_sft_data.py config/tiny_tokenskip_data.py   # -> out/data/sft_tokenskip.jsonl
compressor_kind = 'tokenskip'
out_path = 'out/data/sft_tokenskip.jsonl'
