"""
The CHRPO policy update (train_chrpo.py runs it after every rollout batch): a PPO-style clipped
surrogate with token-level normalization, DAPO's clip-higher, an optional k3 KL to the initial
model. Not run directly:

    from chrpo_loss import policy_update
    stats = policy_update(ddp_model, model, ref_model, optimizer, rollouts, world, pad_id, device,
                          mu=2, micro_batch_tokens=16384, grad_clip=1.0, temperature=1.0,
                          eps_low=0.2, eps_high=0.28, kl_coef=0.0, autocast=autocast,
                          ctrl_entropy_coef=0.0, budget_ids=budget_ids)

Loss per response token t of rollout i, rho = exp(logp_new - logp_old):
    l_t = -min(rho * A_t, clip(rho, 1 - eps_low, 1 + eps_high) * A_t)  [+ kl_coef * k3_t]
    k3_t = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1     (off by default)
    loss = (sum over the global mini-batch of l_t  -  ctrl_entropy_coef * sum over its rollouts of H_ctrl)
           / (its all-reduced token count)
    H_ctrl = entropy of the control token (response token 0) over the five budget tokens: a bonus
    that keeps the budget choice exploring (off by default; see train_chrpo.py's ctrl_entropy_coef).
logp_old is the training forward of the policy that sampled, not the sampler's log-probs. The
first mini-batch runs before any optimizer step, so its own forward gives logp_old (detached: rho = 1
exactly, and no extra pass); the later mini-batches get theirs from a no-grad pass of the same
forward over their micro-batches before the first step. The sampler's log-probs come
from another computation (KV-cache decode, a bf16 LM head) and only feed the `logp_gap` stat
(sampler_logp_gap in the metrics). Both sides compute logits in fp32 at the sampling temperature
(kernels.py; rollouts use top_p = 1, so the behaviour distribution is exactly the tempered softmax
the loss sees).
The rollouts are split into `mu` mini-batches, one optimizer step each, each run in micro-batches
of at most `micro_batch_tokens` padded tokens (memory scales with tokens, not rollouts) with
gradient accumulation. Every micro-batch divides by the *global* token count of its mini-batch,
so the gradient does not depend on how rollouts fall into micro-batches or ranks.
"""
from collections import Counter
from contextlib import nullcontext

import torch

from common import all_reduce_sum
from kernels import fused_linear_token_logprobs


def clipped_surrogate(logp_new, logp_old, adv, eps_lo, eps_hi):
    """Per-token -min(rho A, clip(rho, 1-eps_lo, 1+eps_hi) A), rho = exp(logp_new - logp_old).
    Returns (loss_per_token, clipped_mask)."""
    rho = torch.exp(logp_new - logp_old)
    unclipped = rho * adv
    clipped = rho.clamp(1 - eps_lo, 1 + eps_hi) * adv
    loss = -torch.minimum(unclipped, clipped)
    clipped_mask = ((adv > 0) & (rho > 1 + eps_hi)) | ((adv < 0) & (rho < 1 - eps_lo))
    return loss, clipped_mask


def pack_rollouts(rollouts, pad_id, device, keys=('logp_old', 'token_adv')):
    """Right-pad prompt+response sequences. Returns input ids [B, T] (the last response token
    is never an input), targets [B, T] (response tokens at the positions that predict them,
    -100 elsewhere), and a float32 [B, T] per per-token key (old log-probs, advantages) aligned with targets."""
    seqs = [r['prompt_ids'] + r['tokens'] for r in rollouts]
    T = max(len(s) for s in seqs) - 1
    B = len(rollouts)
    x = torch.full((B, T), pad_id, dtype=torch.long)
    y = torch.full((B, T), -100, dtype=torch.long)
    values = [torch.zeros(B, T, dtype=torch.float32) for _ in keys]
    for b, (r, s) in enumerate(zip(rollouts, seqs)):
        P, R = len(r['prompt_ids']), len(r['tokens'])
        x[b, :len(s) - 1] = torch.tensor(s[:-1])
        # the token at sequence index P + k (response token k) is predicted at position P + k - 1
        y[b, P - 1:P - 1 + R] = torch.tensor(r['tokens'])
        for v, key in zip(values, keys):
            v[b, P - 1:P - 1 + R] = torch.as_tensor(r[key], dtype=torch.float32)
    return (x.to(device), y.to(device), *(v.to(device) for v in values))


def token_logprobs(model, head_weight, x, flat_y, temperature, autocast, with_entropy=False):
    """The training forward's log-prob of every target ([B*T], 0 where flat_y = -100) at the
    sampling temperature: hidden states under autocast, the LM head and log-softmax in fp32
    (logp_old and logp_new: one computation). `model` may be DDP; head_weight is the raw model's.
    with_entropy: (logp, its detached entropy [B*T], the hidden states [B, T, H])."""
    with autocast:
        hidden = model(x, return_hidden=True)
    out = fused_linear_token_logprobs(hidden.flatten(0, 1), head_weight, flat_y, temperature=temperature,
                                      return_entropy=with_entropy, compute_dtype=torch.float32)
    return (*out, hidden) if with_entropy else out


def control_entropy(hidden, head_weight, y, budget_ids, temperature):
    """[B] entropy (nats) of each rollout's control token, the first response token, over the budget
    tokens alone: H = -sum_b p_b log p_b, p = softmax(h W_budget^T / T) with h the hidden state
    that predicts it (the first target position of y [B, T]; 0 for a row without targets).
    Differentiable, fp32: the bonus that keeps the budget choice exploring (micro_batch_loss).
    The softmax is renormalized over the budget tokens, so the bonus spreads probability among
    the budgets; it does not raise their total (a first token that is no budget is R_ctrl's
    business: it earns the minimum)."""
    targets = y != -100
    has_target, first = targets.any(1), targets.int().argmax(1)
    h = hidden[torch.arange(y.shape[0], device=y.device), first].float()
    logp = (h @ head_weight[budget_ids].float().T / temperature).log_softmax(-1)
    return -(logp.exp() * logp).sum(-1) * has_target


def micro_batch_loss(ddp_model, raw_model, ref_model, rollouts, global_tokens, world, pad_id, device, *,
                     temperature, eps_low, eps_high, kl_coef, autocast=nullcontext(), on_policy=False,
                     ctrl_entropy_coef=0.0, budget_ids=None):
    """Loss of one micro-batch (rollouts carrying 'token_adv', and 'logp_old' unless on_policy),
    already divided by the mini-batch's global token count (and multiplied by world size, because
    DDP averages gradients over ranks). on_policy: no optimizer step has run since sampling, so
    logp_old is this forward's own log-probs, detached (rho = 1 exactly), and is recorded on the
    rollouts. Log-probs at the sampling `temperature` (token_logprobs); the k3 KL to ref_model
    (None = off) weighs kl_coef; each rollout's control-token entropy over budget_ids (control_entropy)
    is a bonus of ctrl_entropy_coef, counted like one token's loss (None = neither bonus nor stat).
    Returns (loss, stats dict of sums)."""
    x, y, *per_token = pack_rollouts(rollouts, pad_id, device, keys=('token_adv',) if on_policy else
                                     ('logp_old', 'token_adv'))
    flat_y = y.flatten()
    logp, entropy, hidden = token_logprobs(ddp_model, raw_model.lm_head.weight, x, flat_y, temperature, autocast,
                                           with_entropy=True)
    stats = {}
    if on_policy:
        stats['logp_gap'] = set_old_logprobs(rollouts, logp.detach().view(y.shape))
        old, adv = logp.detach(), per_token[0].flatten()
    else:
        old, adv = per_token[0].flatten(), per_token[1].flatten()
    mask = flat_y != -100
    loss_tok, clipped = clipped_surrogate(logp, old, adv, eps_low, eps_high)
    kl_tok = torch.zeros_like(logp)
    if ref_model is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(ref_model, ref_model.lm_head.weight, x, flat_y, temperature, autocast)
        d = ref_logp - logp
        kl_tok = torch.exp(d) - d - 1  # k3 estimator of KL(new || ref), >= 0
        loss_tok = loss_tok + kl_coef * kl_tok
    loss_sum = (loss_tok * mask).sum()
    if budget_ids is not None:  # the budget choice's entropy: a stat, and with ctrl_entropy_coef a bonus
        with nullcontext() if ctrl_entropy_coef else torch.no_grad():
            h_ctrl = control_entropy(hidden, raw_model.lm_head.weight, y, budget_ids, temperature)
        if ctrl_entropy_coef:
            loss_sum = loss_sum - ctrl_entropy_coef * h_ctrl.sum()
        stats.update(ctrl_entropy=h_ctrl.detach().sum().item(), rollouts=len(rollouts))
    loss = loss_sum / global_tokens * world
    m = mask.float()
    stats.update({'tokens': m.sum().item(), 'clipped': (clipped.float() * m).sum().item(),
                  'entropy': (entropy.detach() * m).sum().item(), 'kl_ref': (kl_tok.detach() * m).sum().item(),
                  'approx_kl': ((old - logp.detach()) * m).sum().item()})
    return loss, stats


def split_by_tokens(rollouts, max_tokens):
    """Micro-batches of at most max_tokens padded tokens (rows x the longest row's inputs; a longer
    rollout goes alone), longest first so little is padding. Memory scales with tokens, not rollouts:
    8 rollouts of 4.3k tokens hold ~100 GiB of activations at Qwen3-1.7B shape, 8 of 300 do not."""
    micro, width = [], 0
    for r in sorted(rollouts, key=lambda r: -(len(r['prompt_ids']) + len(r['tokens']))):
        if micro and (len(micro[-1]) + 1) * width <= max_tokens:
            micro[-1].append(r)
        else:
            micro.append([r])
            width = len(r['prompt_ids']) + len(r['tokens']) - 1  # the batch's padded inputs: its longest row
    return micro


def set_old_logprobs(rollouts, logp):
    """Store each rollout's response log-probs (rows of logp [B, T], aligned with pack_rollouts'
    targets) as r['logp_old']. Returns sum |sampler log-probs - logp_old| (the logp_gap stat)."""
    gap = 0.0
    for b, r in enumerate(rollouts):
        P, R = len(r['prompt_ids']), len(r['tokens'])
        r['logp_old'] = logp[b, P - 1:P - 1 + R].cpu()
        if 'logprobs' in r:
            gap += (torch.as_tensor(r['logprobs'], dtype=torch.float32) - r['logp_old']).abs().sum().item()
    return gap


@torch.no_grad()
def record_old_logprobs(model, micro_batches, pad_id, device, temperature, autocast):
    """Set r['logp_old'] on every rollout of these micro-batches: the training forward (token_logprobs,
    no grad) of the policy that sampled, before the update's first step. Returns {'logp_gap': ...}."""
    gap = 0.0
    for mb in micro_batches:
        x, y = pack_rollouts(mb, pad_id, device, keys=())
        gap += set_old_logprobs(mb, token_logprobs(model, model.lm_head.weight, x, y.flatten(), temperature,
                                                   autocast).view(y.shape))
    return {'logp_gap': gap}


def policy_update(ddp_model, model, ref_model, optimizer, rollouts, world, pad_id, device, *, mu, micro_batch_tokens,
                  grad_clip, temperature, eps_low, eps_high, kl_coef, autocast=nullcontext(), ctrl_entropy_coef=0.0,
                  budget_ids=None):
    """logp_old for every rollout (see the module docstring), then mu optimizer steps on this rank's
    rollouts ('prompt_ids', 'tokens', 'token_adv'), each mini-batch in micro-batches of at most
    micro_batch_tokens padded tokens, grad norm clipped to grad_clip (loss: micro_batch_loss).
    Every rank must call it, even with no rollouts: an empty micro-batch runs a zero-loss pass so
    DDP's all-reduce stays in step. budget_ids ([5] token ids of <COMP_20> .. <COMP_100>) turns on
    the control-entropy stat, and ctrl_entropy_coef > 0 its bonus. Returns summed stats (loss_*,
    logp_gap, grad_norm)."""
    stats = Counter()
    model.train()
    rollouts = [rollouts[i] for i in torch.randperm(len(rollouts)).tolist()]
    minis = [split_by_tokens(rollouts[k::mu], micro_batch_tokens) for k in range(mu)]
    # logp_old: the first mini-batch takes its own forward's (on_policy); the others need a pass now
    stats.update(record_old_logprobs(model, [mb for micro in minis[1:] for mb in micro], pad_id, device, temperature,
                                     autocast))
    for i, micro in enumerate(minis):
        global_tokens = max(1.0, all_reduce_sum([sum(len(r['tokens']) for mb in micro for r in mb)], device)[0])
        micro = micro or [None]
        for k, mbatch in enumerate(micro):
            last = k == len(micro) - 1
            # accumulate locally, all-reduce once per mini-batch (on its last micro-batch)
            with ddp_model.no_sync() if (world > 1 and not last) else nullcontext():
                if mbatch is None:
                    h = ddp_model(torch.full((1, 1), pad_id, device=device), return_hidden=True)
                    loss, st = h.sum() * 0.0 + model.lm_head.weight.sum() * 0.0, {}
                else:
                    loss, st = micro_batch_loss(ddp_model, model, ref_model, mbatch, global_tokens, world, pad_id,
                                                device, temperature=temperature, eps_low=eps_low, eps_high=eps_high,
                                                kl_coef=kl_coef, autocast=autocast, on_policy=i == 0,
                                                ctrl_entropy_coef=ctrl_entropy_coef, budget_ids=budget_ids)
                loss.backward()
            stats['logp_gap'] += st.pop('logp_gap', 0.0)
            for key, v in st.items():
                stats['loss_' + key] += v
        stats['grad_norm'] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return stats
