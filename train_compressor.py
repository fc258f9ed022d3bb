"""
Stage 1 of Extra-CoT: train the question-aware CoT compressor, a keep/drop token classifier
(compressor.py holds the model and the compression algorithm; build_sft_data.py uses the
trained classifier to build the mixed-ratio SFT set).

    python train_compressor.py config/tiny_compressor.py
    python train_compressor.py config/tiny_compressor.py --resume=True   # continue a killed run
    torchrun --standalone --nproc_per_node=8 train_compressor.py config/qwen3_0p6b_compressor.py

Data: an annotated corpus, records {question, cot, keep_spans} (corpus.py writes one). Records
without keep_spans are annotated by annotate.py's rules as they are loaded. Each record becomes
question tokens, <think>, CoT tokens with labels keep (1) / drop (0) on the CoT tokens
(compressor.encode_pair); with graded annotations (key_spans) a kept token outside the key
spans gets the soft target support_label.

Loss over labelled tokens: cross-entropy, or focal  -(1 - p_t)^gamma * log p_t  (gamma 2),
against the soft target (each class's term weighted by its target).
AdamW, linear warmup (6%) then linear decay to 0, grad clip 1.0, early stopping on the
validation macro-F1 (mean of the keep and drop F1) with `patience` evaluations. Validation
also reports decisive-token survival at 0.2 / 0.4: the share of keep-labelled tokens that
are among the top round(n*g) tokens by keep score (key_survival: the same for key tokens).

Output in out_dir: ckpt/ (the best model when training ends, loadable with
compressor.load_compressor; during training the latest step, with train_state.pt for
--resume), best.pt, metrics.jsonl.
"""
import os
import random
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP

import memplan
from annotate import load_annotated
from common import (all_reduce_sum, append_jsonl, atomic_torch_save, barrier, cleanup_dist, find_checkpoint,
                    is_main, load_train_state, print0, rng_state, save_checkpoint, seed_everything, set_rng_state,
                    setup_dist)
from compressor import build_model, encode_pair, pad_examples, round_half_up
from configurator import config_snapshot
from optim import adamw, lr_at
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# config (module globals; configurator.py overrides them from a config file / --key=value)
out_dir = 'out/compressor'          # checkpoints (ckpt = final best model), best.pt, metrics.jsonl
resume = False                      # continue from {out_dir}/ckpt (same step, optimizer, RNG)
train_path = 'out/data/train.jsonl' # annotated corpus {id, question, cot, answer, keep_spans}
val_path = 'out/data/val.jsonl'     # validation split, same format
tokenizer_path = ''                 # '' -> the tokenizer/ beside train_path when init_from='scratch', else init_from
init_from = 'scratch'               # 'scratch' or a Qwen3 folder / hub id (e.g. Qwen/Qwen3-0.6B)
n_layer = 2                         # scratch model: layers
n_embd = 128                        # scratch model: hidden size
n_head = 4                          # scratch model: attention heads (head_dim = n_embd // n_head)
n_kv_head = 2                       # scratch model: key/value heads (GQA)
intermediate_size = 384             # scratch model: SwiGLU width
max_len = 512                       # tokens per example (question + sep + CoT), longer CoTs truncated
max_question_tokens = 128           # the question is cut to this many tokens (CoT gets the rest)
max_train_records = 0               # 0 = all of train_path
max_val_records = 0                 # 0 = all of val_path
batch_size = 16                     # examples per optimizer step per rank
max_iters = 300                     # optimizer steps
learning_rate = 1e-3                # peak AdamW lr
weight_decay = 0.01                 # AdamW weight decay (matrices only)
warmup_frac = 0.06                  # share of max_iters spent warming up linearly, then linear decay
grad_clip = 1.0                     # global grad-norm clip (0 = off)
loss = 'ce'                         # 'ce' or 'focal'
support_label = 0.7                 # keep target of a kept token outside the record's key_spans (graded
                                    # annotations; 1 = binary): the score ranks key > support > filler
focal_gamma = 2.0                   # focal loss exponent
eval_interval = 50                  # steps between validations (and checkpoints)
patience = 4                        # stop after this many validations without a better macro-F1
seed = 1337                         # init, data order
autocast_dtype = 'float32'          # autocast dtype on CUDA ('float32' = off, 'bfloat16'); CPU always runs fp32
activation_checkpointing = False    # recompute each block in backward (less activation memory)
memory_budget_gb = 0.0              # GiB per device the memory plan must fit; 0 = the CUDA device's (CPU: no check)
device_type = 'auto'                # 'auto', 'cpu' or 'cuda'


# -----------------------------------------------------------------------------
# loss, metrics, schedule

def token_loss(logits, labels, kind='ce', gamma=2.0):
    """Mean over labelled tokens (label != -100) of the soft cross-entropy against the keep
    target t in [0, 1]:  CE = -(t log p_keep + (1 - t) log p_drop),  or focal, each class term
    weighted by (1 - p_class)^gamma. With 0/1 labels these are -log p_t and -(1 - p_t)^gamma log p_t."""
    if kind not in ('ce', 'focal'):
        raise ValueError(f"loss must be 'ce' or 'focal', got {kind!r}")
    logits, labels = logits.float().flatten(0, 1), labels.float().flatten()
    mask = labels != -100
    t = labels[mask]
    logp = F.log_softmax(logits[mask], -1)
    target = torch.stack([1 - t, t], -1)
    weight = (1 - logp.exp()) ** gamma if kind == 'focal' else 1.0
    return -(target * weight * logp).sum(-1).mean()


@torch.no_grad()
def evaluate_classifier(model, examples, device, pad_id, batch=32, ratios=(0.2, 0.4)):
    """Counts summed over examples: confusion (tp/fp/fn/tn for keep=1), and per ratio g the keep
    tokens inside the top round(n*g) scores. Returns the counts list (for all_reduce)."""
    model.eval()
    tp = fp = fn = tn = n_keep = n_key = 0
    survived, key_survived = [0] * len(ratios), [0] * len(ratios)
    for i in range(0, len(examples), batch):
        x, y, mask = pad_examples(examples[i:i + batch], pad_id)
        logits = model(x.to(device), attention_mask=mask.to(device)).float().cpu()
        score = logits[..., 1] - logits[..., 0]
        pred = score > 0
        for b in range(x.shape[0]):
            lab = y[b] != -100
            target, pb, sb = y[b][lab], pred[b][lab], score[b][lab]
            yt, key = target > 0, target == 1  # keep: any positive target; key: the full target
            tp += int((pb & yt).sum()); fp += int((pb & ~yt).sum())
            fn += int((~pb & yt).sum()); tn += int((~pb & ~yt).sum())
            n_keep += int(yt.sum()); n_key += int(key.sum())
            for k, g in enumerate(ratios):
                top = sb.argsort(descending=True, stable=True)[:round_half_up(len(sb) * g)]
                survived[k] += int(yt[top].sum())
                key_survived[k] += int(key[top].sum())
    model.train()
    return [tp, fp, fn, tn, n_keep, n_key] + survived + key_survived


def metrics_from_counts(counts, ratios=(0.2, 0.4)):
    tp, fp, fn, tn, n_keep, n_key = counts[:6]
    f1_keep = 2 * tp / max(2 * tp + fp + fn, 1)
    f1_drop = 2 * tn / max(2 * tn + fn + fp, 1)
    out = {'macro_f1': (f1_keep + f1_drop) / 2, 'f1_keep': f1_keep, 'f1_drop': f1_drop,
           'accuracy': (tp + tn) / max(tp + fp + fn + tn, 1), 'keep_share': n_keep / max(tp + fp + fn + tn, 1)}
    for g, s, s_key in zip(ratios, counts[6:6 + len(ratios)], counts[6 + len(ratios):]):
        out[f'survival@{g}'] = s / max(n_keep, 1)
        out[f'key_survival@{g}'] = s_key / max(n_key, 1)  # key = target 1 (all keep tokens without key_spans)
    return out


def labelled_examples(records, tok, max_len, max_q, support_label):
    """(ids, labels) per annotated record (compressor.encode_pair); graded when it has key_spans."""
    return [(ids, labels) for ids, _, _, labels in
            (encode_pair(tok, r['question'], r['cot'], max_len, max_q, r['keep_spans'], r.get('key_spans'),
                         support_label) for r in records)]


# -----------------------------------------------------------------------------
# training

def train(model, tok, train_ex, val_ex, device, rank, world, out_dir, resume, batch_size, max_iters, learning_rate,
          weight_decay, warmup_frac, grad_clip, loss, focal_gamma, eval_interval, patience, seed, autocast_dtype,
          config):
    """Train the classifier; validate and checkpoint every eval_interval steps; stop early after
    `patience` validations without a better macro-F1. Returns the best validation metrics.
    When done, {out_dir}/ckpt holds the best weights, marked finished (a resume returns at once)."""
    t0 = time.time()
    opt = adamw(model, learning_rate, weight_decay, (0.9, 0.98))
    warmup = max(1, round(warmup_frac * max_iters))  # linear warmup, then linear decay to 0
    state = {'step': 0, 'best_f1': -1.0, 'best_metrics': None, 'bad_evals': 0, 'finished': False}
    ckpt = find_checkpoint(out_dir) if resume else None
    if ckpt:
        ts = load_train_state(ckpt)
        model.load_state_dict(load_file(os.path.join(ckpt, 'model.safetensors')))
        opt.load_state_dict(ts['optimizer'])
        state = ts['state']
        set_rng_state(ts['rng'][rank] if isinstance(ts['rng'], list) and rank < len(ts['rng']) else ts['rng'])
        print0(f'resumed from {ckpt} at step {state["step"]}')
    if state['finished']:
        print0('training already finished; nothing to do')
        return state['best_metrics']
    ddp = DDP(model) if world > 1 else model
    autocast = torch.autocast('cuda', dtype=getattr(torch, autocast_dtype),
                              enabled=device.type == 'cuda' and autocast_dtype != 'float32')
    order_rng = random.Random(seed * 1000 + rank + 7 * state['step'])  # data order is a function of step
    best_path = os.path.join(out_dir, 'best.pt')
    if is_main():
        os.makedirs(out_dir, exist_ok=True)

    def save(model):
        if is_main():
            save_checkpoint(out_dir, model, tok, {'optimizer': opt.state_dict(), 'state': state, 'rng': rng_state(),
                                                  'config': config})

    def validate_and_save(step):
        counts = all_reduce_sum(evaluate_classifier(model, val_ex, device, tok.pad_id), device)
        m = metrics_from_counts([int(c) for c in counts])
        improved = m['macro_f1'] > state['best_f1']
        if improved:
            state.update(best_f1=m['macro_f1'], best_metrics=dict(m, step=step), bad_evals=0)
            if is_main():
                atomic_torch_save(model.state_dict(), best_path)
        else:
            state['bad_evals'] += 1
        print0(f"step {step}: val macro-F1 {m['macro_f1']:.4f} (keep F1 {m['f1_keep']:.3f}), survival@0.2 "
               f"{m['survival@0.2']:.3f} @0.4 {m['survival@0.4']:.3f}, key survival@0.2 {m['key_survival@0.2']:.3f} "
               f"@0.4 {m['key_survival@0.4']:.3f}{' *' if improved else ''}")
        if is_main():
            append_jsonl(os.path.join(out_dir, 'metrics.jsonl'), dict(m, step=step, kind='val', time=time.time() - t0))
        save(model)
        barrier()
        return state['bad_evals'] >= patience

    stop = False
    while state['step'] < max_iters and not stop:
        it = state['step']
        batch = [train_ex[order_rng.randrange(len(train_ex))] for _ in range(batch_size)]
        x, y, mask = pad_examples(batch, tok.pad_id)
        lr = lr_at(it, learning_rate, warmup, max_iters, 'linear')
        for g in opt.param_groups:
            g['lr'] = lr
        with autocast:
            logits = ddp(x.to(device), attention_mask=mask.to(device))
        lossv = token_loss(logits, y.to(device), loss, focal_gamma)
        opt.zero_grad(set_to_none=True)
        lossv.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        state['step'] = it + 1
        if it % 25 == 0:
            print0(f'step {it}: loss {lossv.item():.4f} lr {lr:.2e} '
                   f'({time.time() - t0:.1f}s)')
        if state['step'] % eval_interval == 0 or state['step'] == max_iters:
            stop = validate_and_save(state['step'])
    # the final checkpoint holds the best weights (early stopping), marked finished
    if is_main():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
        state['finished'] = True
        save(model)
    barrier()
    print0(f"compressor done in {time.time() - t0:.1f}s: best val macro-F1 {state['best_f1']:.4f} at step "
           f"{state['best_metrics']['step']}{' (early stop)' if stop else ''}")
    return state['best_metrics']


def main():
    t0 = time.time()
    rank, world, _, device = setup_dist(device_type)
    seed_everything(seed + rank)
    tok = load_tokenizer(tokenizer_path or (os.path.join(os.path.dirname(train_path), 'tokenizer')
                                            if init_from == 'scratch' else init_from))
    train_ex = labelled_examples(load_annotated(train_path, max_train_records), tok, max_len, max_question_tokens,
                                 support_label)
    val_ex = labelled_examples(load_annotated(val_path, max_val_records), tok, max_len, max_question_tokens,
                               support_label)
    val_ex = val_ex[rank::world]
    print0(f'compressor: {len(train_ex)} train / {sum(all_reduce_sum([len(val_ex)]))} val examples, '
           f'tokenized in {time.time() - t0:.1f}s')
    model = build_model(tok, init_from, seed, n_layer, n_embd, n_head, n_kv_head, intermediate_size,
                        max_len).to(device)
    plan_dtype = autocast_dtype if device.type == 'cuda' else 'float32'  # autocast runs on CUDA only
    memplan.check(memplan.compressor_plan(model.config, batch_size, max_len, plan_dtype, world, activation_checkpointing),
                  memplan.budget_bytes(device, memory_budget_gb), 'train_compressor', print_fn=print0)
    model.set_activation_checkpointing(activation_checkpointing)  # before DDP wraps it (in train)
    best = train(model, tok, train_ex, val_ex, device, rank, world, out_dir, resume, batch_size, max_iters,
                 learning_rate, weight_decay, warmup_frac, grad_clip, loss, focal_gamma, eval_interval, patience,
                 seed, autocast_dtype, config=config_snapshot(globals()))
    cleanup_dist()
    return best


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()
