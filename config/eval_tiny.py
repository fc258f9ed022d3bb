# Evaluation of the embedded default (CPU): base, SFT and CHRPO checkpoints on the
# synthetic test split, every budget mode. python evaluate.py config/eval_tiny.py
out_dir = 'out/eval'
models = {'base': 'out/base/ckpt', 'sft': 'out/sft/ckpt', 'chrpo': 'out/chrpo/ckpt'}
model_modes = {'base': ['base'],
               'sft': ['0.2', '0.4', '0.6', '0.8', '1.0', 'auto'],
               'chrpo': ['auto']}  # the paper's table: CHRPO in POLICY mode
optional_models = []  # every stage of the speedrun must have produced its checkpoint
benchmarks = ['synthetic']
data_dir = 'out/data'
max_items = 0  # all test questions
n_samples = 2  # two samples a question: the paired 95% half-width between two rows falls from ~2.5 to <= 2 points
reference_samples = 4  # the base row four times: r's denominator is their mean. One base sample against another
                       # differs by 0.12 in r, so a copy of the base would score ~0.12 x sqrt(1.5/2) = 0.104 at
                       # ratio 1.0 against a two-sample mean (above the 0.1 goal) and ~0.095 against four's
temperature = 0.7
top_p = 0.9
max_new_tokens = 512  # the longest synthetic CoT is ~300 tokens
batch_size = 200  # one decode batch per chunk (100 questions x 2 samples)
chunk_items = 100
report_path = 'out/report.md'
