"""
The TokenSkip-style baseline compressor: question-agnostic, and not trained on this corpus's
keep/drop annotations. The Extra-CoT paper compares its question-aware compressor with
TokenSkip, which prunes the model's own CoTs with a general-purpose token-importance model
(LLMLingua-2) that never sees the question, then runs the same ratio-conditioned SFT. This
file is that baseline's compressor; the rest of its pipeline is ours, unchanged.

    python build_sft_data.py config/tiny_sft_data.py config/tiny_tokenskip_data.py  # -> out/data/sft_tokenskip.jsonl
    bash speedrun.sh --paper                    # its SFT ('tokenskip'), evaluated beside ours

    from tokenskip import load_scorer, compress_batch
    lm, tok = load_scorer('out/base/ckpt')
    rows = compress_batch(lm, tok, [(question, cot)], [0.2, 0.4])  # the question is never read

The importance score. LLMLingua-2 is a classifier trained on another corpus (meeting
transcripts compressed by GPT-4); this world has no such corpus, and training a classifier on
ours would use the very annotations the baseline must not see. Its predecessors (Selective
Context, LLMLingua) score a token by its self-information under a small general-purpose causal
LM, which needs no annotations at all. That is the counterpart here:

    surprisal_i = -log p(t_i | <think>\\n, t_1 .. t_{i-1})       (nats, fp32 log-softmax)

over the CoT ALONE: the context is the think opener and the CoT's own earlier tokens, never the
question. The LM is the base reasoning model (out/base/ckpt): the only general language model
of this world, trained by next-token prediction on the corpus's full verbose CoTs, never on the
keep spans (at paper scale base_ckpt is Qwen3-1.7B as released). A surprising
token carries information the LM could not guess from the text so far; a predictable one
(boilerplate, a restated number) is the first to go. What it cannot know is which numbers the
question asked about: that is the point of the comparison.

Selection is exactly ours (compressor.cot_units / group_drop_runs / recomputing_filler /
select_units / render_units), so the comparison isolates the score. The score is centered per CoT:
    score_i = surprisal_i - median_j surprisal_j
group_drop_runs reads score <= 0 as "drop" and merges such consecutive words into sentence units;
with the median as zero, a word all of whose tokens are more predictable than the CoT's typical
token is filler (so filler enters a compression as whole sentences, as with ours), and the
ranking select_units uses is unchanged by the shift. Realized ratios are counted in the
reasoning model's tokenizer, which here is the scorer's own.
"""
import torch

from compressor import compress_scored, token_spans
from data import THINK_START
from kernels import fused_linear_token_logprobs
from model import Qwen3
from tokenizer import load_tokenizer


def load_scorer(path, device='cpu'):
    """(causal LM, its tokenizer) from a checkpoint folder or hub id, in fp32 for scoring."""
    return Qwen3.from_pretrained(path, dtype=torch.float32, device=device), load_tokenizer(path)


@torch.no_grad()
def surprisals(model, tok, cots, batch_size=16):
    """-log p(token | <think>\\n, earlier CoT tokens) of every token of each CoT, in nats.
    A CoT longer than the model's positions is scored in consecutive windows, each starting
    again from the think opener. Returns [(spans, surprisals)] (spans: compressor.token_spans)."""
    model.eval()
    device = next(model.parameters()).device
    prefix = tok.encode(THINK_START + '\n')
    room = max(1, model.config.max_position_embeddings - len(prefix))
    jobs, results = [], []
    for k, cot in enumerate(cots):
        ids, spans = token_spans(tok, cot)
        results.append((spans, [0.0] * len(ids)))
        for w in range(0, len(ids), room):
            jobs.append((k, w, prefix + ids[w:w + room]))
    jobs.sort(key=lambda j: len(j[2]))  # similar lengths together: less padding
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i:i + batch_size]
        T = max(len(ids) for _, _, ids in chunk)
        x = torch.full((len(chunk), T), tok.pad_id, dtype=torch.long)
        y = torch.full((len(chunk), T), -100, dtype=torch.long)  # y[t] = the token x[t] predicts
        for b, (_, _, ids) in enumerate(chunk):
            x[b, :len(ids)] = torch.tensor(ids)
            y[b, len(prefix) - 1:len(ids) - 1] = torch.tensor(ids[len(prefix):])
        # causal and right-padded: a row's pad tokens come after everything it scores
        hidden = model(x.to(device), return_hidden=True).float()
        logp = fused_linear_token_logprobs(hidden.flatten(0, 1), model.lm_head.weight.float(), y.flatten().to(device),
                                           compute_dtype=torch.float32).view(len(chunk), T).cpu()
        for b, (k, w, ids) in enumerate(chunk):
            n = len(ids) - len(prefix)
            results[k][1][w:w + n] = (-logp[b, len(prefix) - 1:len(prefix) - 1 + n]).tolist()
    return results


def centered(values):
    """values minus their median (the lower median for an even count): about half the tokens
    score <= 0, which group_drop_runs reads as drop."""
    if not values:
        return []
    med = sorted(values)[(len(values) - 1) // 2]
    return [v - med for v in values]


def compress_batch(model, tok, pairs, ratios, reasoning_tok=None, batch_size=16):
    """compressor.compress_batch's interface (pairs of (question, cot)), but the question is
    dropped here, before anything is scored: the baseline is question-agnostic by construction."""
    cots = [cot for _, cot in pairs]
    return [compress_scored(cot, spans, centered(s), ratios, reasoning_tok or tok)
            for cot, (spans, s) in zip(cots, surprisals(model, tok, cots, batch_size))]
