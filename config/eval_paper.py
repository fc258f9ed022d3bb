# The paper's comparisons on the embedded default (speedrun --paper's eval_paper stage): the
# main rows of config/eval_tiny.py (reused from their sample files, not sampled again) plus the
# TokenSkip-style baseline at 0.2 / 0.4 / 0.8 beside ours, and the CHRPO ablations in POLICY mode.
# Goes after config/eval_tiny.py; speedrun passes models with its $OUT paths:
#   python evaluate.py config/eval_tiny.py config/eval_paper.py
models = {'base': 'out/base/ckpt', 'sft': 'out/sft/ckpt', 'chrpo': 'out/chrpo/ckpt',
          'sft_ratio': 'out/sft_ratio/ckpt', 'tokenskip': 'out/tokenskip/ckpt',
          'chrpo_no_ctrl': 'out/chrpo_no_ctrl/ckpt', 'chrpo_no_mode': 'out/chrpo_no_mode/ckpt',
          'chrpo_no_both': 'out/chrpo_no_both/ckpt'}
model_modes = {'base': ['base'],  # the main rows: as in config/eval_tiny.py
               'sft': ['0.2', '0.4', '0.6', '0.8', '1.0', 'auto'],
               'chrpo': ['auto'],
               # ours before the POLICY warm-up: the same training as tokenskip's but for the compressor
               'sft_ratio': ['0.2', '0.4', '0.8'],
               'tokenskip': ['0.2', '0.4', '0.8'],  # no POLICY mode: TokenSkip has none
               'chrpo_no_ctrl': ['auto'], 'chrpo_no_mode': ['auto'], 'chrpo_no_both': ['auto']}
# paired differences (same questions): ours minus the baseline at each ratio; each ablation minus full CHRPO
paired_with = {'sft': 'tokenskip', 'sft_ratio': 'tokenskip',
               'chrpo_no_ctrl': 'chrpo', 'chrpo_no_mode': 'chrpo', 'chrpo_no_both': 'chrpo'}
