"""
Supervised fine-tuning of a Qwen3 causal LM on chat-formatted reasoning examples, loss on
the assistant tokens only. Two jobs in this project:

- stage 0 (the embedded default only): train the tiny base reasoning model from scratch on
  the full verbose CoTs (out/data/train.jsonl, every record in mode 'none');
- stage 2: mixed-ratio SFT from a checkpoint (out/base/ckpt, or Qwen/Qwen3-1.7B) on the
  compressed CoTs with budget tokens (out/data/sft_mixed.jsonl, records carry 'mode',
  'chosen', 'response'), which teaches <COMP_xx> control and the POLICY warm-up.

Run:
    python train_sft.py config/tiny_base.py                        # one CPU process
    torchrun --standalone --nproc_per_node=2 train_sft.py config/tiny_sft.py
    torchrun --standalone --nproc_per_node=8 train_sft.py config/qwen3_1p7b_sft.py
    python train_sft.py config/tiny_sft.py --resume=True           # continue a killed run

The optimizer step (token-level mean over the whole global batch):
    loss = sum_{micro, rank} sum_{t: y_t != -100} w_t CE_t / N_global
where N_global is the number of supervised tokens in the step across all micro-batches and
ranks (counted before the forward passes), so a token weighs the same however the tokens fall
into micro-batches; w_t is 1, or data.target_weights' class weight (result_digit_weight,
operand_digit_weight, budget_choice_weight) for the few tokens that carry the arithmetic and
the POLICY decision. AdamW (fused on CUDA), lr: linear warmup then cosine to
min_lr_ratio * learning_rate, grad clip (optim.py). Precision: fp32 master weights, gradients
and AdamW state; bf16 only inside autocast (`autocast_dtype`, 'auto' = bf16 on CUDA, fp32 on CPU).

Batch: `global_batch_size` examples per optimizer step over all ranks; each rank runs
global_batch_size / (batch_size * world) micro-batches of batch_size (an error when that is not
a whole number), so 1 GPU and 8 GPUs train the same thing. Memory: before the first step every
rank computes memplan.sft_plan (weights, gradients, AdamW, activations at batch_size x max_len),
rank 0 prints it, and the run stops with the keys to change when it does not fit the device
(or `memory_budget_gb`); `activation_checkpointing=True` recomputes each block in backward.

Data order is a pure function of (seed, step): the global example stream is the concatenation
of per-epoch permutations of the data set (permutation e drawn from seed + e), and micro step
m of rank r reads the slice [(m * world + r) * B, (m * world + r + 1) * B) of that stream. So
`--resume=True` at step s replays exactly what an uninterrupted run would have seen.

Distributed: DDP by default (gloo on CPU, nccl on CUDA); `--fsdp=True` shards the model with
FSDP2 (`torch.distributed.fsdp.fully_shard`, one unit per block + the root) for models that do
not fit DDP; checkpoints then gather the full model and optimizer state to rank 0 (works on
CPU with gloo too, which is how it is tested here).

Output in out_dir: ckpt/ (HF folder: config.json, model.safetensors, tokenizer files,
train_state.pt with optimizer/step/RNG; written atomically by common.save_checkpoint every
ckpt_interval steps and at the end), metrics.jsonl (loss, lr, tokens/s, MFU on GPU, val loss).
"""
import math
import os
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import memplan
from common import (all_reduce_sum, append_jsonl, barrier, cleanup_dist, epoch_permutation, find_checkpoint,
                    is_main, iter_jsonl, load_train_state, print0, read_jsonl_tolerant, rng_state,
                    save_checkpoint, seed_everything, set_rng_state, setup_dist, write_jsonl)
from configurator import config_snapshot
from data import pad_batch, record_to_sft_example, target_weights, token_classes
from tokenizer import load_tokenizer
from model import Qwen3, Qwen3Config, resolve_model_dir, trained_vocab_size
from optim import DTYPES, adamw, autocast_dtype as resolve_autocast_dtype, lr_at, make_autocast

# -----------------------------------------------------------------------------
# config (module globals; configurator.py overrides them from a config file / --key=value)
out_dir = 'out/sft'            # checkpoint folder out_dir/ckpt and metrics.jsonl go here
init_from = 'scratch'          # 'scratch' (model from the size keys below), an HF folder, or a hub id
resume = False                 # continue from out_dir's last checkpoint (starts fresh if none)
# data
data_path = 'out/data/train.jsonl'      # training records (corpus format, optional mode/chosen/response)
val_path = 'out/data/val.jsonl'         # validation records ('' = no validation)
tokenizer_path = 'out/data/tokenizer'   # tokenizer.load_tokenizer path (adds the budget tokens)
default_mode = 'none'          # budget mode for records without a 'mode' field
max_len = 512                  # examples longer than this many tokens are truncated (counted)
result_digit_weight = 1.0      # loss weight of the digits right after '=' (a CoT's computed results); 1 = plain CE
operand_digit_weight = 1.0     # loss weight of every other digit target (operands, the answer); 1 = plain CE
budget_choice_weight = 1.0     # loss weight of a POLICY answer's chosen budget (its first token, after <COMP_AUTO>)
# model size when init_from == 'scratch' (vocab comes from the tokenizer)
n_layer = 4                    # transformer blocks
n_embd = 256                   # hidden size
n_head = 4                     # query heads
n_kv_head = 2                  # key/value heads (GQA)
head_dim = 64                  # per-head width (Qwen3 keeps it independent of n_embd / n_head)
intermediate = 768             # SwiGLU width
rope_theta = 10000.0           # RoPE base
tie_word_embeddings = True     # LM head shares the embedding matrix
# optimization
max_iters = 1000               # optimizer steps (overridden by num_epochs > 0)
num_epochs = 0.0               # > 0: max_iters = ceil(num_epochs * examples / global batch)
batch_size = 16                # micro-batch per rank (examples)
global_batch_size = 0          # examples per optimizer step over all ranks (a multiple of batch_size * world);
                               # 0 = batch_size * world (one micro-batch per rank: the global batch grows with world)
length_group = 32              # sort each run of this many global batches by length (less padding); 0 = off
learning_rate = 1e-3           # peak lr
min_lr_ratio = 0.1             # cosine floor as a fraction of the peak
warmup_frac = 0.05             # linear warmup over this fraction of max_iters
weight_decay = 0.1             # AdamW decoupled decay on matrices (not norms / biases)
beta1 = 0.9                    # AdamW beta1
beta2 = 0.95                   # AdamW beta2
grad_clip = 1.0                # max global grad norm (0 = off)
seed = 1337                    # init + data order
# system
device_type = 'auto'           # 'auto' | 'cuda' | 'cpu'
autocast_dtype = 'auto'        # 'auto' = bf16 on CUDA, fp32 (off) on CPU; 'bfloat16' also on CPU. Weights stay fp32
activation_checkpointing = False  # recompute each block in backward (much less activation memory, ~+33% FLOPs)
memory_budget_gb = 0.0         # GiB per device the memory plan must fit; 0 = the CUDA device's memory (CPU: no check)
fsdp = False                   # shard with FSDP2 fully_shard instead of DDP
compile = False                # torch.compile the transformer blocks (model.compile_blocks: dynamic shapes, keys unchanged)
peak_flops = 989e12            # per-device peak for MFU (H100 bf16 dense)
# logging / eval / checkpoints
log_interval = 10              # steps between metrics.jsonl lines
eval_interval = 200            # steps between validation losses (0 = only at the end)
eval_examples = 256            # validation examples used (the first ones of val_path)
ckpt_interval = 500            # steps between checkpoints (and one at the end; 0 = only at the end)

# -----------------------------------------------------------------------------
# data


def load_examples(path, tok, mode, max_len):
    """Read a jsonl of records and turn each into (ids, loss_mask) via data.record_to_sft_example.
    Records longer than max_len are truncated; those left with no supervised token are dropped.
    A malformed record is an error naming file:line, record id and the problem."""
    records = list(iter_jsonl(path))  # (line number, record): iter_jsonl rejects what is not a JSON object
    if not records:
        raise ValueError(f'{path}: no records')
    examples, n_truncated, n_dropped = [], 0, 0
    for lineno, rec in records:
        where = f"{path}: record {lineno} (id {rec.get('id', '?')})"  # lineno: the record's line in the file
        for key in ('question',):
            if not isinstance(rec.get(key), str):
                raise ValueError(f"{where}: missing or non-string key '{key}'")
        if 'cot' not in rec:
            raise ValueError(f"{where}: missing key 'cot'")
        if 'response' not in rec and 'answer' not in rec:
            raise ValueError(f"{where}: missing key 'answer' (or 'response')")
        rec = dict(rec)
        rec.setdefault('mode', mode)
        try:
            ids, mask = record_to_sft_example(rec, tok)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f'{where}: cannot build an SFT example ({type(e).__name__}: {e})') from None
        ids, mask = list(ids), list(mask)
        if len(ids) != len(mask):
            raise ValueError(f'{where}: ids and loss mask differ in length ({len(ids)} vs {len(mask)})')
        if len(ids) > max_len:
            n_truncated += 1
            ids, mask = ids[:max_len], mask[:max_len]
        # a loss-mask entry at position t supervises token t, i.e. the target of position t-1
        if not any(mask[1:]):
            n_dropped += 1
            continue
        examples.append((ids, mask))
    print0(f'{path}: {len(examples)} examples, {n_truncated} truncated to max_len={max_len}, '
           f'{n_dropped} dropped (no supervised token left)')
    if not examples:
        raise ValueError(f'{path}: every example was dropped (max_len={max_len} too small?)')
    return examples


_ORDER_CACHE = {}


def epoch_order(n, seed, epoch, lengths=None, pool=0, unit=1):
    """The example order of one epoch: a seeded permutation; with `lengths` and pool > 1,
    each run of pool * unit examples (unit = one global micro-batch, world * B) is sorted by
    length, cut into units, and the units shuffled. Batches then hold similar lengths, so
    right-padding wastes little compute (random batches of 150..420-token examples waste ~40%),
    and the order is still a pure function of (seed, epoch)."""
    key = (n, seed, epoch, pool, unit, id(lengths))
    if key in _ORDER_CACHE:
        return _ORDER_CACHE[key]
    perm = epoch_permutation(n, seed, epoch)
    if lengths is not None and pool > 1:
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        grouped = []
        for s in range(0, n, pool * unit):
            chunk = sorted(perm[s:s + pool * unit], key=lambda i: lengths[i])
            units = [chunk[k:k + unit] for k in range(0, len(chunk), unit)]
            grouped += [i for j in torch.randperm(len(units), generator=g).tolist() for i in units[j]]
        perm = grouped
    if len(_ORDER_CACHE) > 4:
        _ORDER_CACHE.clear()
    _ORDER_CACHE[key] = perm
    return perm


def batch_indices(n, seed, micro_step, rank, world_size, batch_size, lengths=None, pool=0):
    """Example indices of micro step `micro_step` on `rank`: the slice
    [(m * world + r) * B, +B) of the stream order_0 ++ order_1 ++ ... (epoch_order)."""
    start = (micro_step * world_size + rank) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, i = divmod(pos, n)
        out.append(epoch_order(n, seed, epoch, lengths, pool, world_size * batch_size)[i])
    return out


def make_batch(examples, idx, pad_id, device):
    x, y = pad_batch([examples[i] for i in idx], pad_id)
    n_tokens = sum(len(examples[i][0]) for i in idx)
    return x.to(device), y.to(device), n_tokens


# -----------------------------------------------------------------------------
# model


def build_model(tok, init_from, device, scratch_config, seed):
    """A fresh fp32 Qwen3 (scratch_config: Qwen3Config size fields, initialized from `seed`) when
    init_from == 'scratch', else a checkpoint in fp32 (the master weights; bf16 comes from
    autocast). Token ids the checkpoint never trained (the budget tokens appended to its
    tokenizer, which may sit in Qwen3's padding rows) start as the mean trained row (fit_vocab)."""
    if init_from == 'scratch':
        cfg = Qwen3Config(vocab_size=tok.vocab_size, torch_dtype='float32', bos_token_id=None,
                          eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **scratch_config)
        return Qwen3(cfg).init_weights(seed).to(device)
    model = Qwen3.from_pretrained(init_from, dtype=torch.float32, device='cpu')
    n_trained = trained_vocab_size(resolve_model_dir(init_from), model.config.vocab_size)
    new_ids = model.fit_vocab(tok.vocab_size, n_trained)
    if new_ids:
        print0(f'{init_from}: token ids {new_ids[0]}..{new_ids[-1]} are new to the checkpoint (trained on '
               f'{n_trained}): initialized to the mean trained embedding row')
    return model.to(device)


def accumulation_steps(global_batch_size, batch_size, world):
    """Micro-batches per rank per optimizer step: global_batch_size / (batch_size * world)
    (global_batch_size 0: 1). The same global batch on any number of GPUs."""
    if global_batch_size == 0:
        return 1
    accum, rest = divmod(global_batch_size, batch_size * world)
    if rest or accum == 0:
        raise ValueError(f'global_batch_size={global_batch_size} is not a multiple of batch_size * world size = '
                         f'{batch_size} * {world}: change batch_size (or global_batch_size)')
    return accum


def shard_with_fsdp(model, world, amp):
    """FSDP2: one unit per transformer block, then the root (embeddings, final norm, head).
    Under autocast (amp != 'float32') the shards stay fp32 (master weights, fp32 AdamW) but are
    all-gathered in amp and the gradients reduce-scattered in fp32 (MixedPrecisionPolicy):
    without it every gather moves, and every block holds, fp32 weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if not dist.is_initialized():
        raise RuntimeError('fsdp=True needs torch.distributed: launch with torchrun')
    if world == 1:
        print0('fsdp=True in one process: sharding over a single rank (no memory saved)')
    mp = MixedPrecisionPolicy() if amp == 'float32' else \
        MixedPrecisionPolicy(param_dtype=DTYPES[amp], reduce_dtype=torch.float32)
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def full_state(model, optimizer, fsdp):
    """(model state dict, optimizer state dict) as full tensors; under FSDP a collective that
    gathers to rank 0 (other ranks get empty dicts)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_optimizer_state(model, optimizer, state, fsdp):
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def resume_from(ckpt, model, optimizer, out_dir, fsdp):
    """Load the optimizer, step and RNG state saved beside `ckpt`'s weights; drop the metric lines
    a killed run wrote past that step. Returns the step to continue from."""
    state = load_train_state(ckpt)
    if state is None:
        raise FileNotFoundError(f'{ckpt}: train_state.pt missing, cannot resume')
    load_optimizer_state(model, optimizer, state['optimizer'], fsdp)
    set_rng_state(state['rng'])
    print0(f"resumed from {ckpt} at step {state['step']}")
    if is_main():
        path = os.path.join(out_dir, 'metrics.jsonl')
        write_jsonl(path, [r for r in read_jsonl_tolerant(path) if r.get('step', 0) <= state['step']])
    return state['step']


def save_train_checkpoint(out_dir, model, raw_model, optimizer, tok, fsdp, train_state):
    """Every rank calls it (the FSDP gather is a collective); rank 0 writes the HF folder with
    train_state + the optimizer state and RNG beside the weights."""
    msd, osd = full_state(model, optimizer, fsdp)
    if is_main():
        to_save = raw_model
        if fsdp:  # a plain CPU copy holding the gathered weights
            with torch.device('meta'):
                to_save = Qwen3(raw_model.config)
            to_save = to_save.to_empty(device='cpu')
            to_save.load_state_dict(msd)
            if raw_model.config.tie_word_embeddings:
                to_save.lm_head.weight = to_save.model.embed_tokens.weight
        save_checkpoint(out_dir, to_save, tok, {**train_state, 'optimizer': osd, 'rng': rng_state()})
    barrier()


# -----------------------------------------------------------------------------
# training


@torch.no_grad()
def evaluate_loss(model, examples, pad_id, device, rank, world, autocast, batch_size):
    """Token-weighted mean CE over the examples (split across ranks, summed with all-reduce)."""
    model.eval()
    total, count = 0.0, 0.0
    mine = list(range(rank, len(examples), world))
    for i in range(0, len(mine), batch_size):
        x, y, _ = make_batch(examples, mine[i:i + batch_size], pad_id, device)
        n = (y != -100).sum().item()
        # eager: a few eval batches never pay for compiling the no-grad graph of compiled blocks
        with autocast, torch.compiler.set_stance('force_eager'):
            loss = model(x, targets=y)
        total += loss.item() * n
        count += n
    total, count = all_reduce_sum([total, count], device)
    model.train()
    return total / max(count, 1.0)


def train_log_row(step, lr, sums, elapsed, device, world, flops_per_token, peak_flops):
    """One metrics.jsonl line from the sums since the last line (an all-reduce: every rank calls
    it). sums = [CE summed over supervised tokens, tokens seen, supervised tokens]."""
    loss_sum, tok_sum, n_sup = all_reduce_sum(sums, device)
    row = {'step': step, 'loss': loss_sum / max(n_sup, 1.0), 'lr': lr, 'tokens_per_s': tok_sum / elapsed}
    if device.type == 'cuda':  # model FLOPs utilization: achieved / peak over all devices
        row['mfu'] = flops_per_token * row['tokens_per_s'] / (peak_flops * world)
    return row


def accumulate_gradients(model, micro, n_global, world, fsdp, autocast, classes=None, loss_weights=None):
    """Forward and backward of one step's micro-batches [(x, y, n_tokens)] on this rank, each
    mean loss weighted by its share of the N_global supervised tokens of the step, so the
    gradients sum to those of the global token mean. With `classes` (data.token_classes), each
    target's CE is weighted by data.target_weights(..., **loss_weights): result digits, other
    digits and a POLICY answer's chosen budget token count more. Returns the (weighted) CE
    summed over this rank's supervised tokens."""
    step_loss = 0.0
    for k, (x, y, _) in enumerate(micro):
        last_micro = k == len(micro) - 1
        # gradients are synced across ranks on the last micro-batch only
        sync_ctx = model.no_sync() if isinstance(model, DDP) and not last_micro else nullcontext()
        if fsdp:
            model.set_requires_gradient_sync(last_micro)
        n_valid = (y != -100).sum().item()
        weights = target_weights(x, y, classes, **(loss_weights or {})) if classes is not None else None
        with sync_ctx:
            with autocast:
                loss = model(x, targets=y, target_weights=weights)
            # DDP / FSDP average gradients over ranks, so scale by world: the sum over ranks and
            # micro-batches of mean_k * n_k / N_global is the global token mean
            scaled = loss * (n_valid * world / max(n_global, 1.0))
            scaled.backward()
        step_loss += loss.item() * n_valid
    return step_loss


def main():
    rank, world, local_rank, device = setup_dist(device_type)
    seed_everything(seed + rank)
    tok = load_tokenizer(tokenizer_path)
    accum = accumulation_steps(global_batch_size, batch_size, world)
    amp = resolve_autocast_dtype(autocast_dtype, device)

    train_ex = load_examples(data_path, tok, default_mode, max_len)
    val_ex = load_examples(val_path, tok, default_mode, max_len)[:eval_examples] if val_path else []
    n_iters = max_iters  # num_epochs > 0 sets the step count from the data size
    if num_epochs > 0:
        n_iters = math.ceil(num_epochs * len(train_ex) / (batch_size * accum * world))
        print0(f'num_epochs={num_epochs}: max_iters = {n_iters}')
    print0(f'global batch {batch_size * accum * world} examples = batch_size {batch_size} x {accum} micro-batches '
           f'x {world} ranks; autocast {amp}')
    train_config = config_snapshot(globals())
    train_config['max_iters'] = n_iters
    # per-class loss weights; digit / space / '=' / budget per token id, on the batches' device
    loss_weights = dict(result_weight=result_digit_weight, operand_weight=operand_digit_weight,
                        budget_weight=budget_choice_weight)
    classes = token_classes(tok).to(device) if any(w != 1.0 for w in loss_weights.values()) else None

    # ---- model, memory plan, state (resume beats init_from)
    ckpt = find_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        print0(f'resume=True but no checkpoint in {out_dir}: starting fresh')
    scratch_config = dict(hidden_size=n_embd, intermediate_size=intermediate, num_hidden_layers=n_layer,
                          num_attention_heads=n_head, num_key_value_heads=n_kv_head, head_dim=head_dim,
                          rope_theta=rope_theta, max_position_embeddings=max(max_len, 2048),
                          tie_word_embeddings=tie_word_embeddings)
    model = raw_model = build_model(tok, ckpt or init_from, device, scratch_config, seed)
    cfg = raw_model.config
    print0(f'model: {raw_model.num_params() / 1e6:.2f}M parameters, {cfg.num_hidden_layers} layers, '
           f'hidden {cfg.hidden_size}, vocab {cfg.vocab_size}')
    # before anything is written: a refused run leaves out_dir as it was
    memplan.check(memplan.sft_plan(cfg, batch_size, max_len, amp, fsdp, world, activation_checkpointing),
                  memplan.budget_bytes(device, memory_budget_gb), 'train_sft', print_fn=print0)
    raw_model.set_activation_checkpointing(activation_checkpointing)  # before compile and DDP/FSDP
    if fsdp:
        shard_with_fsdp(model, world, amp)
    optimizer = adamw(model, learning_rate, weight_decay, (beta1, beta2), fused=device.type == 'cuda')
    start_step = resume_from(ckpt, model, optimizer, out_dir, fsdp) if ckpt is not None else 0
    if compile:
        raw_model.compile_blocks()  # in place: checkpoints keep plain state_dict keys
    if world > 1 and not fsdp:
        model = DDP(model, device_ids=[local_rank] if device.type == 'cuda' else None)
    autocast = make_autocast(device, amp)
    flops_per_token = raw_model.flops_per_token(max_len)
    if is_main():
        os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    warmup_steps = math.ceil(warmup_frac * n_iters)

    # ---- loop
    model.train()
    train_lengths = [len(ids) for ids, _ in train_ex]
    sums, t0, last_loss = [0.0, 0, 0], time.time(), float('nan')  # sums: CE, tokens, supervised tokens
    bar = tqdm(total=n_iters, initial=start_step, disable=not is_main(), desc='sft', dynamic_ncols=True)
    for step in range(start_step, n_iters):
        lr = lr_at(step, learning_rate, warmup_steps, n_iters, 'cosine', min_lr_ratio)
        for group in optimizer.param_groups:
            group['lr'] = lr
        # build the whole step's micro-batches first: the supervised-token count N_global
        # is needed to weigh each micro-batch's mean loss (one small all-reduce)
        micro = [make_batch(train_ex, batch_indices(len(train_ex), seed, step * accum + k, rank, world,
                                                    batch_size, train_lengths, length_group), tok.pad_id, device)
                 for k in range(accum)]
        n_local = sum((y != -100).sum().item() for _, y, _ in micro)
        n_global = all_reduce_sum([n_local], device)[0]
        sums[0] += accumulate_gradients(model, micro, n_global, world, fsdp, autocast, classes, loss_weights)
        sums[1] += sum(n_tok for _, _, n_tok in micro)
        sums[2] += n_local
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.update(1)

        if done % log_interval == 0 or done == n_iters:
            row = train_log_row(done, lr, sums, time.time() - t0, device, world, flops_per_token, peak_flops)
            last_loss = row['loss']
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f'{lr:.2e}', tok_s=f"{row['tokens_per_s']:.0f}")
            if is_main():
                append_jsonl(metrics_path, row)
            sums, t0 = [0.0, 0, 0], time.time()
        if val_ex and ((eval_interval > 0 and done % eval_interval == 0) or done == n_iters):
            val_loss = evaluate_loss(model, val_ex, tok.pad_id, device, rank, world, autocast, batch_size)
            print0(f'\nstep {done}: val loss {val_loss:.4f}')
            if is_main():
                append_jsonl(metrics_path, {'step': done, 'val_loss': val_loss})
        if (ckpt_interval > 0 and done % ckpt_interval == 0) or done == n_iters:
            save_train_checkpoint(out_dir, model, raw_model, optimizer, tok, fsdp,
                                  {'step': done, 'config': train_config, 'world_size': world, 'loss': last_loss})
    bar.close()
    if start_step >= n_iters:
        print0(f'{out_dir}: already at step {start_step} >= max_iters={n_iters}, nothing to do')
    barrier()
    cleanup_dist()
    return raw_model


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
