"""
Memory plan: the peak memory one GPU needs for a stage, estimated before the first step
from the model shape (Qwen3Config), the stage's config and the world size. Each script
prints the plan on rank 0 and stops, naming the config keys to change, when it does not fit.

    python memplan.py config/qwen3_1p7b_sft.py                       # 1 and 8 GPUs of 80 GB
    python memplan.py config/qwen3_1p7b_chrpo.py --gpus=4 --prompt_len=768
    python memplan.py config/eval_qwen3_1p7b.py --gpu_gib=139        # an H200

    import memplan   # in a script, once the model is built (wiring: see each *_plan docstring)
    phases = memplan.sft_plan(model.config, batch_size, max_len, dtype, fsdp, world, activation_checkpointing)
    memplan.check(phases, memplan.budget_bytes(device, memory_budget_gb), 'train_sft', print_fn=print0)

What is counted, per GPU (bytes; p = parameter dtype bytes, c = compute (autocast) dtype bytes):
- weights n_params * p, gradients n_params * p, AdamW's two moments n_params * p (fp32 master
  weights: p = 4), all divided by the world size under FSDP; DDP adds its gradient buckets
  (one more copy of the gradients). FSDP adds the gathered working set: two blocks and the
  root's parameters (embedding, head) in c (MixedPrecisionPolicy(param_dtype=c)), and two
  blocks of gradients to reduce-scatter.
- autocast's weight copies: every matmul weight cast to c once per forward and kept (the
  graph saves it for backward) -- n_matmul_params * c, not with FSDP's mixed precision.
- activations: the bytes the graph saves for backward, a sum over what model.py's ops save,
  per token and layer (block_activation_bytes; within 1% of saved_tensors_hooks on CPU in
  tests/test_memplan.py; CUDA's fused RMSNorm may save a little less). Qwen3-1.7B: 118 KiB a
  token a layer with fp32 weights under bf16 autocast, 110 KiB for a bf16 model. With
  activation checkpointing: each block's input (p * H a token a layer) plus one block
  recomputed during backward.
- the LM head through kernels.py's fused log-probs: one token chunk of logits in c, the
  weight cast to c, the fp32 grad_weight sum, grad_hidden.
- sampling: the KV cache, 2 * layers * rows * kv_heads * (prompt + new tokens) * head_dim * c
  (rows: what one generate batch decodes; evaluation's batch_size, fewer when a rank's shard is smaller;
  the sampler prefills into that one cache and fans out in place, so there is no second copy),
  one step's logits and the sampling temporaries (top-p sorts the vocabulary), and a prefill
  forward's transients.
- RUNTIME_BYTES for the CUDA context, NCCL and allocator fragmentation (a guess, not measured).
The sum is conservative: gradients and activations are counted at full size together.
"""
import ast
import dataclasses
import math
import os
import sys

import torch

from kernels import default_chunk_size
from model import Qwen3Config

GiB = 2**30
DTYPE_BYTES = {'float32': 4, 'bfloat16': 2, 'float16': 2}
RUNTIME_BYTES = 2 * GiB  # CUDA context (~0.5 GiB), NCCL buffers, allocator fragmentation: a guess
SAMPLING_BYTES_PER_LOGIT = {'top_p': 40, 'plain': 16}  # fp32 copies, sort values + int64 indices, cumsum, race
DEFAULT_GPU_GIB = 79.2  # what an "80 GB" H100 / A100 reports as total_memory
# Qwen3 shapes by name, so a plan needs no download (config.json of the hub checkpoints)
KNOWN_SHAPES = {
    'Qwen3-0.6B': dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    'Qwen3-1.7B': dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    'Qwen3-4B': dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    'Qwen3-8B': dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}

# -----------------------------------------------------------------------------
# sizes from the model shape


def param_counts(cfg):
    """Parameter counts: total (what model.parameters() holds, a tied head once), per block,
    a block's matmul weights (what autocast casts), embedding, head (0 when tied), root
    (everything outside the blocks)."""
    H, I, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    bias = (q + 2 * kv + H) if cfg.attention_bias else 0
    block_matmul = H * q + 2 * H * kv + q * H + bias + 3 * H * I
    block = block_matmul + 2 * hd + 2 * H  # + q_norm, k_norm, the two RMSNorms
    embedding = cfg.vocab_size * H
    if cfg.num_labels is not None:
        head = H * cfg.num_labels + cfg.num_labels  # the classifier's score layer
    else:
        head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * H
    root = embedding + head + H  # + the final norm
    return {'total': root + cfg.num_hidden_layers * block, 'block': block, 'block_matmul': block_matmul,
            'embedding': embedding, 'head': head, 'root': root}


def block_activation_bytes(cfg, p, c, kv_expanded=False):
    """Bytes one block saves for backward per token. p: residual stream / parameter bytes
    (the residual stays in the parameters' dtype under autocast), c: compute bytes.
    kv_expanded: k/v expanded to every query head (model.py's masked attention)."""
    H, I, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    kvh = nh if kv_expanded else nkv
    norms = 2 * (4 * H + 4 + p * H)  # each RMSNorm: fp32 input, 1/rms, normalized output (for its weight)
    linear_inputs = 2 * c * H  # the normed x that q/k/v and gate/up share (cast to c once: to_autocast_dtype)
    qk_norms = (4 + c) * (nh + nkv) * hd + 4 * (nh + nkv)  # per-head RMSNorm: fp32 input, 1/rms, output
    attention = c * (2 * nh * hd + 2 * kvh * hd) + 4 * nh  # SDPA: q, k, v, out (o_proj's input, a view), lse
    mlp = 4 * c * I  # gate out (silu's input), silu out, up out, their product (down_proj's input)
    return norms + linear_inputs + qk_norms + attention + mlp


def activation_bytes(cfg, tokens, p, c, checkpointing=False, kv_expanded=False):
    """Bytes a training forward over `tokens` tokens (padding included) leaves saved for
    backward, autocast's weight copies and the fused LM head's own buffers excluded. With
    checkpointing only the block inputs stay (backward then recomputes one block at a time:
    tokens * block_activation_bytes more while it does)."""
    H, L = cfg.hidden_size, cfg.num_hidden_layers
    per_token = 8 + 2 * cfg.head_dim * p + (4 * H + 4 + p * H)  # ids, RoPE cos/sin (shared), final norm
    if cfg.num_labels is None:
        per_token += p * H + 12  # the fused LM head keeps its input, the targets and a logsumexp
    else:  # the score layer's input (cast under autocast), the fp32 logits the CE reads
        per_token += (c * H if c != p else p * H) + 8 * cfg.num_labels
    per_block = p * H if checkpointing else block_activation_bytes(cfg, p, c, kv_expanded)
    return tokens * (per_token + L * per_block)


def forward_transient_bytes(cfg, tokens, p, c):
    """A no-grad forward's live intermediates inside one block (prefill, old log-probs):
    residual and normed x, q/k/v in fp32 and c, gate/up/their product."""
    hd, nh, nkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    return tokens * (2 * p * cfg.hidden_size + (4 + c) * (nh + 2 * nkv) * hd + 3 * c * cfg.intermediate_size)


def lm_head_bytes(cfg, tokens, p, c, train=True):
    """kernels.fused_linear_token_logprobs: one token chunk of logits in c (the Triton backward
    turns it into d logits in place), the weight cast to c; in training also the fp32
    grad_weight sum, one chunk's [V, H] product in c, and grad_hidden [tokens, H]."""
    V, H = cfg.vocab_size, cfg.hidden_size
    chunk = min(tokens, default_chunk_size(V, 'cuda'))
    total = chunk * V * c + (V * H * c if c != p else 0)
    if train:
        total += V * H * 4 + (V * H * c if c != 4 else 0) + tokens * H * p
    return total


def kv_cache_bytes(cfg, rows, length, c):
    """model.make_kv_cache(rows, length): a k and a v buffer [rows, kv_heads, length, head_dim] a layer."""
    return 2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * length * cfg.head_dim * c

# -----------------------------------------------------------------------------
# plans: lists of rows {'what', 'bytes', 'keys' (the config keys that shrink it)}


def _row(what, nbytes, keys=''):
    return {'what': what, 'bytes': int(nbytes), 'keys': keys}


def training_rows(cfg, tokens, p, c, checkpointing, fsdp, world, keys, kv_expanded=False, shard_key='fsdp'):
    """Rows of one training step (forward + backward + AdamW) on one GPU. keys: names of the
    config keys that shrink the activations, e.g. 'batch_size, max_len'; shard_key: the key
    that turns on FSDP ('' where the script has none)."""
    n = param_counts(cfg)
    shard = world if fsdp else 1
    state_key = 'more GPUs' if fsdp else shard_key
    rows = [_row(f'weights ({n["total"] / 1e9:.2f}B params x {p} B' + (f', 1/{shard} FSDP shard)' if fsdp else ')'),
                 n['total'] * p / shard, state_key),
            _row('gradients', n['total'] * p / shard, state_key),
            _row('AdamW moments (2 x params)', 2 * n['total'] * p / shard, state_key)]
    if fsdp:
        gathered = (2 * n['block'] + n['root']) * c + 2 * n['block'] * p
        rows.append(_row('FSDP gathered blocks, root, reduce-scatter', gathered))
    elif world > 1:
        rows.append(_row('DDP gradient buckets', n['total'] * p, shard_key))
    if c != p and not fsdp:
        rows.append(_row('autocast weight copies', cfg.num_hidden_layers * n['block_matmul'] * c, shard_key))
    ckpt = 'activation checkpointing on' if checkpointing else 'activation checkpointing off'
    rows.append(_row(f'activations ({tokens} tokens, {ckpt})',
                     activation_bytes(cfg, tokens, p, c, checkpointing, kv_expanded),
                     keys + ('' if checkpointing else ', activation_checkpointing')))
    if checkpointing:
        rows.append(_row('one block recomputed in backward', tokens * block_activation_bytes(cfg, p, c, kv_expanded),
                         keys))
    if cfg.num_labels is None:
        rows.append(_row('LM head (fused log-prob chunk, grad_weight)', lm_head_bytes(cfg, tokens, p, c), keys))
    rows.append(_row('runtime (CUDA context, NCCL, fragmentation)', RUNTIME_BYTES))
    return rows


def sampling_rows(cfg, weight_bytes, c, rows, prompts, prompt_len, max_new_tokens, top_p, keys, weights='weights'):
    """Rows of sampling `rows` sequences (from `prompts` distinct prompts) of up to
    prompt_len + max_new_tokens tokens with model.py's KV cache (one cache of `rows` rows: the
    sampler prefills into it and fans the prompts out in place)."""
    length = prompt_len + max_new_tokens
    per_logit = SAMPLING_BYTES_PER_LOGIT['top_p' if top_p < 1 else 'plain']
    return [_row(weights, param_counts(cfg)['total'] * weight_bytes),
            _row(f'KV cache ({rows} rows x {length} tokens)', kv_cache_bytes(cfg, rows, length, c), keys),
            _row('prefill transients', forward_transient_bytes(cfg, prompts * prompt_len, c, c), keys),
            _row('logits and sampling temporaries', rows * cfg.vocab_size * (c + per_logit), keys),
            _row('runtime (CUDA context, NCCL, fragmentation)', RUNTIME_BYTES)]


def _resident(rows, what):
    """Training state that stays allocated during another phase (rollouts between updates):
    weights, AdamW's moments, DDP's buckets (gradients themselves are freed by zero_grad)."""
    return [_row(f'{r["what"]} ({what})', r['bytes'], r['keys']) for r in rows
            if r['what'].startswith(('weights', 'AdamW', 'DDP'))]

# -----------------------------------------------------------------------------
# the stages (what each script calls; all sizes per GPU)


def _dtype_bytes(dtype, where):
    if dtype == 'auto':
        dtype = 'bfloat16'  # 'auto' = bf16 on CUDA, where the plan matters
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"memplan: {where} = {dtype!r}, expected one of {sorted(DTYPE_BYTES)} or 'auto'")
    return DTYPE_BYTES[dtype]


def sft_plan(cfg, batch_size, max_len, dtype, fsdp, world, activation_checkpointing=False):
    """train_sft.py: fp32 master weights under `dtype` autocast; batch_size sequences of up to
    max_len tokens per micro-batch. Wire in main after build_model, before DDP/FSDP."""
    c = _dtype_bytes(dtype, 'dtype')
    return {'sft step': training_rows(cfg, batch_size * max_len, 4, c, activation_checkpointing, fsdp, world,
                                      'batch_size, max_len')}


def chrpo_plan(cfg, rollout_prompts, group_size, micro_batch_tokens, prompt_len, max_new_tokens, top_p, dtype,
               world, activation_checkpointing=False, kl_coef=0.0, teacher_prompts=0, teacher_samples=1,
               sample_dtype=None):
    """train_chrpo.py: fp32 master weights + AdamW under `dtype` autocast, a `sample_dtype`
    (default: `dtype`) sampling copy for rollouts, a frozen `dtype` reference when kl_coef > 0.
    rollout_prompts: questions decoded at once on this GPU (prompts_per_decode); teacher_prompts: the teacher pass's,
    teacher_samples each, at every budget in turn. An update's micro-batch holds up to
    micro_batch_tokens padded tokens, or one rollout of up to prompt_len + max_new_tokens."""
    c = _dtype_bytes(dtype, 'dtype')
    train = training_rows(cfg, max(micro_batch_tokens, prompt_len + max_new_tokens), 4, c, activation_checkpointing,
                          False, world, 'micro_batch_tokens', shard_key='')
    cs = _dtype_bytes(sample_dtype or dtype, 'sample_dtype')
    ref = [_row('frozen reference model', param_counts(cfg)['total'] * c, 'kl_coef')] if kl_coef > 0 else []
    rollouts = _resident(train, 'training state') + ref + sampling_rows(
        cfg, cs, cs, rollout_prompts * group_size, rollout_prompts, prompt_len, max_new_tokens, top_p,
        'sample_batch_size, max_new_tokens', weights='weights (sampling copy)')
    phases = {'rollouts': rollouts, 'update': train[:-1] + ref + train[-1:]}
    if teacher_prompts:  # the fp32 policy stays resident beside the sampling copy the teacher pass decodes with
        phases['teacher labels'] = train[:1] + sampling_rows(
            cfg, cs, cs, teacher_prompts * teacher_samples, teacher_prompts, prompt_len, max_new_tokens, top_p,
            'sample_batch_size, teacher_chunk, teacher_samples, max_new_tokens', weights='weights (sampling copy)')
    return phases


def prompts_per_decode(n_prompts, n, batch_size=None):
    """Distinct prompts in one sampler batch when n_prompts prompts are sampled n times each and
    the sampler decodes at most batch_size rows at once (None or 0: all)."""
    rows = n_prompts * n if not batch_size else min(batch_size, n_prompts * n)
    return max(1, min(n_prompts, math.ceil(rows / n)))


def eval_plan(cfg, batch_size, prompt_len, max_new_tokens, top_p, dtype, n_samples=1):
    """evaluate.py: weights in `dtype`, batch_size rows decoded at once. Wire before sampling."""
    c = _dtype_bytes(dtype, 'dtype')
    prompts = max(1, batch_size // max(1, n_samples))
    return {'evaluation': sampling_rows(cfg, c, c, batch_size, prompts, prompt_len, max_new_tokens, top_p,
                                        'batch_size, max_new_tokens')}


def compressor_plan(cfg, batch_size, max_len, dtype, world, activation_checkpointing=False):
    """train_compressor.py's classifier: fp32 master weights under `dtype` autocast,
    bidirectional padded attention (k/v expanded to every head). DDP."""
    c = _dtype_bytes(dtype, 'dtype')
    return {'compressor step': training_rows(cfg, batch_size * max_len, 4, c, activation_checkpointing, False,
                                             world, 'batch_size, max_len', kv_expanded=True, shard_key='')}

# -----------------------------------------------------------------------------
# report and check


def device_bytes(device):
    """Total memory of a CUDA device (bytes), None elsewhere (no check on CPU)."""
    if torch.device(device).type != 'cuda':
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def budget_bytes(device, budget_gib=0.0):
    """The limit a script checks its plan against: budget_gib GiB when > 0 (a config's
    memory_budget_gb; also on CPU, where it forces the check), else device_bytes(device)."""
    return int(budget_gib * GiB) if budget_gib > 0 else device_bytes(device)


def format_plan(phases, title, limit=None):
    """A table per phase: item, GiB, the config keys that shrink it; total and headroom."""
    lines = [f'memory plan: {title} (per GPU)']
    for phase, rows in phases.items():
        total = sum(r['bytes'] for r in rows)
        lines.append(f'  {phase}:')
        for r in rows:
            lines.append(f'    {r["what"]:<58s} {r["bytes"] / GiB:8.2f} GiB  {r["keys"]}')
        verdict = '' if limit is None else \
            (f'  fits ({(limit - total) / GiB:.1f} GiB spare of {limit / GiB:.1f})' if total <= limit
             else f'  DOES NOT FIT in {limit / GiB:.1f} GiB')
        lines.append(f'    {"total":<58s} {total / GiB:8.2f} GiB{verdict}')
    return '\n'.join(lines)


def check(phases, limit, title, print_fn=print):
    """Print the plan (print_fn: print0 on rank 0) and raise MemoryError naming the config
    keys of the largest items when a phase's total exceeds `limit` bytes (None: no check)."""
    print_fn(format_plan(phases, title, limit))
    if limit is None:
        return
    for phase, rows in phases.items():
        total = sum(r['bytes'] for r in rows)
        if total > limit:
            big = sorted((r for r in rows if r['keys']), key=lambda r: -r['bytes'])[:3]
            fixes = '; '.join(f'{r["what"]} {r["bytes"] / GiB:.1f} GiB: change {r["keys"]}' for r in big)
            raise MemoryError(f'{title}: the {phase} phase needs ~{total / GiB:.1f} GiB per GPU, more than the '
                              f'device\'s {limit / GiB:.1f} GiB. Largest items: {fixes}')

# -----------------------------------------------------------------------------
# CLI: a config file -> the plan for 1 and 8 GPUs


def script_defaults(script):
    """The config defaults of a training script: its top-level `name = literal` assignments,
    read with ast (no import, no torch)."""
    with open(script) as f:
        tree = ast.parse(f.read(), script)
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return defaults


def stage_of(config):
    if 'models' in config:
        return 'eval'
    if 'group_size' in config:
        return 'chrpo'
    if 'max_question_tokens' in config or 'patience' in config:  # train_compressor.py's own keys
        return 'compressor'
    return 'sft'


SCRIPTS = {'sft': 'train_sft.py', 'chrpo': 'train_chrpo.py', 'eval': 'evaluate.py', 'compressor': 'train_compressor.py'}


def resolve_shape(names, shape=''):
    """Qwen3Config for the first of `names` (or `shape`) that is a folder with config.json or
    names a KNOWN_SHAPES model (e.g. 'Qwen/Qwen3-1.7B', 'qwen3_1p7b')."""
    for name in ([shape] if shape else []) + [n for n in names if n]:
        if os.path.isfile(os.path.join(name, 'config.json')):
            return Qwen3Config.from_json(os.path.join(name, 'config.json')), name
        key = os.path.basename(str(name)).lower().replace('.', 'p').replace('-', '_')
        for known, dims in KNOWN_SHAPES.items():
            if known.lower().replace('.', 'p').replace('-', '_') in key:
                return Qwen3Config(**dims), known
    raise SystemExit(f'memplan: cannot tell the model shape from {names}: pass --shape=Qwen/Qwen3-1.7B '
                     f'(one of {sorted(KNOWN_SHAPES)}) or --shape=<folder with config.json>')


# the config key holding each stage's dtype: the autocast dtype (fp32 master weights) in the
# training scripts, the weights' dtype in evaluation
DTYPE_KEYS = {'sft': 'autocast_dtype', 'chrpo': 'autocast_dtype', 'compressor': 'autocast_dtype', 'eval': 'param_dtype'}


def plan_for_config(config, cfg, world, prompt_len):
    """The phases of the stage `config` (a script's globals after the config file) configures."""
    stage = stage_of(config)
    ac = bool(config.get('activation_checkpointing', False))
    dtype = config[DTYPE_KEYS[stage]]
    if stage == 'sft':
        return sft_plan(cfg, config['batch_size'], config['max_len'], dtype, config['fsdp'], world, ac)
    if stage == 'compressor':  # the shape's LM turned into the 2-label bidirectional classifier
        classifier = dataclasses.replace(cfg, num_labels=2, is_causal=False)
        return compressor_plan(classifier, config['batch_size'], config['max_len'], dtype, world, ac)
    if stage == 'chrpo':
        sbs, per_rank = config['sample_batch_size'], math.ceil(config['questions_per_step'] / world)
        teacher = prompts_per_decode(math.ceil(config['teacher_chunk'] / world), config['teacher_samples'], sbs)
        return chrpo_plan(cfg, prompts_per_decode(per_rank, config['group_size'], sbs), config['group_size'],
                          config['micro_batch_tokens'], prompt_len, config['max_new_tokens'], config['top_p'],
                          dtype, world, ac, config['kl_coef'], teacher, config['teacher_samples'])
    return eval_plan(cfg, config['batch_size'], prompt_len, config['max_new_tokens'], config['top_p'],
                     dtype, config['n_samples'])


def main(argv):
    """python memplan.py CONFIG [--gpus=1,8] [--gpu_gib=79.2] [--shape=...] [--prompt_len=512] [--key=value ...]"""
    files = [a for a in argv if not a.startswith('--')]
    opts = dict(a[2:].split('=', 1) for a in argv if a.startswith('--') and '=' in a)
    if len(files) != 1:
        raise SystemExit(main.__doc__)
    here = os.path.dirname(os.path.abspath(__file__))
    cfg_file = {}
    with open(files[0]) as f:
        exec(f.read(), {}, cfg_file)
    stage = opts.pop('stage', None) or stage_of(cfg_file)
    config = script_defaults(os.path.join(here, SCRIPTS[stage]))
    config.update({k: v for k, v in cfg_file.items() if not k.startswith('_')})
    gpus = [int(g) for g in opts.pop('gpus', '1,8').split(',')]
    limit = float(opts.pop('gpu_gib', DEFAULT_GPU_GIB)) * GiB
    shape, prompt_len = opts.pop('shape', ''), int(opts.pop('prompt_len', 512))
    # the scripts name their compute dtype differently (evaluate / train_chrpo: param_dtype,
    # train_sft: autocast_dtype, train_compressor: dtype); the plans take it as `dtype`
    for key in ('param_dtype', 'autocast_dtype'):
        if key in config:
            config.setdefault('dtype', config[key])
    for k, v in opts.items():  # --key=value overrides, as configurator.py parses them
        try:
            config[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            config[k] = v
    names = list(config['models'].values()) if stage == 'eval' else [config.get('init_from', '')]
    cfg, shape_name = resolve_shape(names + [files[0]], shape)
    how = 'weights' if stage == 'eval' else 'fp32 master weights + AdamW under autocast to'
    print(f'{files[0]}: stage {stage}, model {shape_name}, {how} {config.get(DTYPE_KEYS[stage])}, '
          f'prompts of {prompt_len} tokens (--prompt_len; rollouts/eval only)')
    failed = False
    for world in gpus:
        try:
            check(plan_for_config(config, cfg, world, prompt_len), limit, f'{stage} on {world} GPU(s)')
        except MemoryError as e:
            print(f'  -> {e}')
            failed = True
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
