"""
What the training scripts' optimizer steps share (train_sft.py, train_chrpo.py,
train_compressor.py): AdamW with its decay groups, the learning-rate schedule, and mixed
precision. Not run directly:

    from optim import adamw, lr_at, autocast_dtype, make_autocast, sampling_copy, refresh_sampling_copy
    optimizer = adamw(model, learning_rate, weight_decay, (0.9, 0.95), fused=device.type == 'cuda')
    lr = lr_at(step, learning_rate, warmup_steps, max_iters, decay='cosine', min_ratio=0.1)
    amp = autocast_dtype('auto', device)             # 'bfloat16' on CUDA, 'float32' (off) on CPU
    with make_autocast(device, amp):
        loss = model(x, targets=y)
    sample_model = sampling_copy(model, amp)         # bf16 copy to decode with (the model itself in fp32)
    refresh_sampling_copy(sample_model, model)       # after each optimizer step

Precision: the weights the optimizer steps are fp32 ("master weights") and so are their
gradients and AdamW's two moments; bf16 appears only inside autocast (matmul inputs) or in
a separate sampling copy. Why: AdamW's step is about lr * sign(grad), 1e-6 for CHRPO; a bf16
weight near 1.0 (an RMSNorm gain) has a spacing of 2^-7 = 0.0078, so the step rounds away
and the weight never moves, while an fp32 one (spacing 1.2e-7) takes it.
"""
import copy
import math

import torch

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def adamw(model, lr, weight_decay, betas, fused=False):
    """AdamW with decoupled decay on the matrices only (embeddings, linears); norm gains and
    biases are not decayed (decaying a gain pulls it toward 0, not toward "simpler")."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step, peak, warmup_steps, max_iters, decay='cosine', min_ratio=0.0):
    """Learning rate at optimizer step `step` (0-based): linear warmup to `peak` over
    warmup_steps steps, lr = peak * (step + 1) / warmup_steps, then to lo = min_ratio * peak at
    max_iters by `decay`:
        'cosine'   lo + (peak - lo) * (1 + cos(pi * progress)) / 2,  progress = (step - warmup) / (max_iters - warmup)
        'linear'   lo + (peak - lo) * (max_iters - step) / (max_iters - warmup)
        'constant' peak"""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if decay == 'constant':
        return peak
    span = max(1, max_iters - warmup_steps)
    lo = min_ratio * peak
    if decay == 'linear':
        return lo + (peak - lo) * max(0.0, (max_iters - step) / span)
    if decay != 'cosine':
        raise ValueError(f"lr_at: decay must be 'cosine', 'linear' or 'constant', got {decay!r}")
    progress = min(1.0, (step - warmup_steps) / span)
    return lo + (peak - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast_dtype(name, device, key='autocast_dtype'):
    """The dtype name autocast runs in for a config value: 'auto' is 'bfloat16' on CUDA and
    'float32' (no autocast: the tiny default on CPU) elsewhere; 'bfloat16' / 'float16' hold on
    any device, CPU included (how the tests run the bf16 path). `key` names the config key in
    the error."""
    if name == 'auto':
        return 'bfloat16' if torch.device(device).type == 'cuda' else 'float32'
    if name not in DTYPES:
        raise ValueError(f"{key} = {name!r}: expected 'auto' or one of {sorted(DTYPES)}")
    return name


def make_autocast(device, name):
    """An autocast context for the dtype `name` ('float32': a disabled one). Reusable: enter it
    once per forward."""
    return torch.autocast(torch.device(device).type, dtype=DTYPES[name], enabled=name != 'float32')


def sampling_copy(model, amp, separate=False):
    """The model to sample (decode) with: the fp32 model itself when autocast is off ('float32')
    and not `separate` (e.g. the training model's blocks get compiled), else a frozen copy in
    `amp` (bf16: half the weight and KV-cache bytes of fp32 decoding). refresh_sampling_copy
    keeps it equal to the master weights."""
    if amp == 'float32' and not separate:
        return model
    return copy.deepcopy(model).to(DTYPES[amp]).eval().requires_grad_(False)


@torch.no_grad()
def refresh_sampling_copy(sample_model, model):
    """Copy the master weights into the sampling copy (rounded to its dtype)."""
    if sample_model is not model:
        sample_model.load_state_dict(model.state_dict())
