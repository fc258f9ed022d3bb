"""
A hand-written Qwen3, the one model every stage runs on. Same weights, same names and
same logits as transformers' Qwen3ForCausalLM, so HF checkpoints load and what we train
loads back into transformers (and vLLM).

    from model import Qwen3, Qwen3Config
    model = Qwen3.from_pretrained('Qwen/Qwen3-1.7B', dtype=torch.bfloat16, device='cuda')
    logits = model(input_ids)                       # [B, T, V]
    hidden = model.hidden(input_ids)                # [B, T, H], final norm applied, no LM head
    loss = model(input_ids, targets=targets)        # mean next-token CE over targets != -100

One block (pre-norm, residual):
    h = x + o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))      QK-norm *before* RoPE
    y = h + down_proj(silu(gate_proj(n)) * up_proj(n)),  n = rms(h)  SwiGLU
RMSNorm runs in fp32: rms(x) = w * x / sqrt(mean(x^2) + eps). head_dim comes from the config
(Qwen3-0.6B: hidden 1024, 16 heads, head_dim 128, so q_proj is 1024 -> 2048). GQA: each
group of num_attention_heads / num_key_value_heads query heads shares one k/v head.

The compressor uses the same blocks bidirectionally with a token-classification head:
    Qwen3(config, num_labels=2, causal=False)(input_ids) -> [B, T, 2]

Training memory: `model.set_activation_checkpointing(True)` recomputes each block in backward
(same gradients; memplan.py estimates what it saves). Tokens new to a checkpoint:
    model.fit_vocab(tok.vocab_size, trained_vocab_size(model_dir, model.config.vocab_size))
gives every id past the checkpoint's own tokenizer the mean of the trained rows, also when it
lands in Qwen3's padding rows (151,669 tokens, 151,936 rows), where no resize happens.

KV cache (the sampler builds on it): `make_kv_cache(batch, max_len)` preallocates one
[B, n_kv_heads, max_len, head_dim] k and v buffer per layer. `model(ids, kv_cache=cache,
input_pos=pos)` with `pos` a [B] tensor of each row's start position writes the new keys
at slots pos[b] .. pos[b]+T-1 of row b and lets the query at absolute position p see slots
0..p. Rows of a batch may sit at different positions (ragged prompts, right-padded):
slots past a row's real tokens hold junk from padding, but a query never sees a slot past
its own position, and decoding overwrites the junk before it becomes visible.
"""
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.checkpoint import checkpoint

from common import atomic_write_json
from kernels import fused_linear_token_logprobs

try:  # flash-attn is optional: only used when importable and running on CUDA
    from flash_attn import flash_attn_func, flash_attn_with_kvcache
except Exception:
    flash_attn_func = flash_attn_with_kvcache = None

# -----------------------------------------------------------------------------
# config


@dataclass
class Qwen3Config:
    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    torch_dtype: str = 'bfloat16'
    bos_token_id: int | None = 151643
    eos_token_id: int | list | None = 151645
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    # compressor variant (not Qwen3 proper; saved so the classifier folder reloads as one)
    num_labels: int | None = None
    is_causal: bool = True
    extra: dict = field(default_factory=dict)  # other config.json keys, written back as they came

    @classmethod
    def from_dict(cls, d, source='config'):
        d = dict(d)
        if d.get('model_type') not in (None, 'qwen3'):
            raise ValueError(f"{source}: model_type is {d['model_type']!r}, expected 'qwen3'")
        # transformers v5 writes rope_parameters = {rope_type, rope_theta}; older files rope_theta
        rope = d.pop('rope_parameters', None) or d.pop('rope_scaling', None) or {}
        if rope.get('rope_type', 'default') != 'default':
            raise ValueError(f"{source}: rope_type {rope.get('rope_type')!r} is not supported (only 'default')")
        if 'rope_theta' in rope:
            d.setdefault('rope_theta', rope['rope_theta'])
        if d.get('use_sliding_window'):
            raise ValueError(f'{source}: use_sliding_window=true is not supported')
        if 'dtype' in d and 'torch_dtype' not in d:
            d['torch_dtype'] = d.pop('dtype')
        names = {f.name for f in fields(cls)} - {'extra'}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        for k in ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'):
            if k not in known:
                raise ValueError(f"{source}: missing key '{k}'")
        known.setdefault('num_key_value_heads', known['num_attention_heads'])
        known.setdefault('head_dim', known['hidden_size'] // known['num_attention_heads'])
        if 'id2label' in extra and known.get('num_labels') is None:
            known['num_labels'] = len(extra['id2label'])
        cfg = cls(**known, extra=extra)
        if cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ValueError(f'{source}: num_attention_heads ({cfg.num_attention_heads}) must be a multiple '
                             f'of num_key_value_heads ({cfg.num_key_value_heads})')
        return cfg

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}: not valid JSON ({e})') from None
        return cls.from_dict(d, source=path)

    def to_dict(self):
        d = dict(self.extra)
        d.update({k: v for k, v in asdict(self).items() if k not in ('extra', 'num_labels', 'is_causal')})
        d.update(model_type='qwen3', hidden_act='silu', use_sliding_window=False, attention_dropout=0.0,
                 rope_scaling=None, rope_parameters={'rope_type': 'default', 'rope_theta': self.rope_theta})
        if self.num_labels is None:
            d['architectures'] = ['Qwen3ForCausalLM']
        else:  # compressor: bidirectional token classifier
            d['architectures'] = ['Qwen3ForTokenClassification']
            d['num_labels'] = self.num_labels
            d['id2label'] = {str(i): f'LABEL_{i}' for i in range(self.num_labels)}
            d['label2id'] = {f'LABEL_{i}': i for i in range(self.num_labels)}
            d['is_causal'] = self.is_causal
        return d


# -----------------------------------------------------------------------------
# building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # in fp32 whatever the input dtype: x / sqrt(mean(x^2) + eps), then scale, as Qwen3 does
        # (F.rms_norm is one fused op: the decode step of a small model is dispatch-bound)
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)


def rope_cos_sin(positions, head_dim, theta, dtype):
    """cos/sin for integer positions [B, T] -> [B, 1, T, head_dim] each (fp32 math).
    angle(p, i) = p * theta^(-2i/head_dim), duplicated for the two halves (rotate-half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[..., None] * inv_freq  # [B, T, head_dim/2]
    emb = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, T, head_dim]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def one_query_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d), masked) v for a decode step (one query per row), GQA without
    copying the cache: q [B, heads, 1, d] viewed as [B, kv_heads, group, d] (query head h reads
    k/v head h // group, as repeat_interleave lays them out). k, v [B, kv_heads, S, d]; mask
    [B, 1, 1, S] bool, True = visible. SDPA would copy: CUDA's fused kernels refuse GQA with a
    mask, and the math kernel expands k and v to every query head, every step."""
    B, heads, _, d = q.shape
    kv_heads = k.shape[1]
    scores = torch.matmul(q.reshape(B, kv_heads, heads // kv_heads, d), k.transpose(-1, -2))  # [B, kv, group, S]
    scores = (scores.float() / math.sqrt(d)).masked_fill(~mask, float('-inf'))
    return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v).reshape(B, heads, 1, d)


def apply_rope(x, cos, sin):
    # rotate-half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) on the two halves of head_dim
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        H, bias = cfg.hidden_size, cfg.attention_bias
        self.q_proj = nn.Linear(H, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(H, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(H, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, H, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)  # per head, over head_dim
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, causal, key_padding_mask=None, cache=None, cache_ctx=None):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, heads, T, head_dim]

        if cache is not None:
            y = self._attend_cached(q, k, v, cache, cache_ctx)
        elif flash_attn_func is not None and x.is_cuda and key_padding_mask is None and x.dtype in (torch.float16, torch.bfloat16):
            y = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal).transpose(1, 2)
        else:
            mask = None
            if key_padding_mask is not None:  # [B, T] True = real token; pads are never attended to
                mask = key_padding_mask[:, None, None, :].bool()
                if causal:
                    mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = self._sdpa(q, k, v, mask, causal and mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def _sdpa(self, q, k, v, mask, is_causal):
        """SDPA with GQA. With a mask and several queries, k/v are first expanded to every query
        head (repeat_interleave, what enable_gqa means): CUDA's fused kernels turn down
        enable_gqa with an attn_mask, and the math fallback keeps [B, heads, T, S] fp32 scores
        for backward in every layer (4 GiB a layer for the compressor's 4 x 4096 tokens). Decode
        steps without flash-attn go to one_query_attention instead."""
        rep = self.n_heads // self.n_kv_heads
        if mask is not None and rep > 1 and q.shape[2] > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                              enable_gqa=k.shape[1] != q.shape[1])

    def _attend_cached(self, q, k, v, cache, ctx):
        k_cache, v_cache = cache  # [B, n_kv, S, head_dim] each, preallocated
        # scatter this step's keys/values into each row's slots (index built once per forward)
        k_cache.scatter_(2, ctx['index'], k.to(k_cache.dtype))
        v_cache.scatter_(2, ctx['index'], v.to(v_cache.dtype))
        if ctx['flash']:
            # flash-attn's decode kernel; it reads cache_seqlens = tokens already visible per row
            y = flash_attn_with_kvcache(q.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2),
                                        cache_seqlens=ctx['seqlens'], causal=True)
            return y.transpose(1, 2)
        # query at absolute position p sees slots 0..p of its own row
        if q.shape[2] == 1:
            return one_query_attention(q, k_cache.to(q.dtype), v_cache.to(q.dtype), ctx['mask'])
        return self._sdpa(q, k_cache.to(q.dtype), v_cache.to(q.dtype), ctx['mask'], False)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, causal, key_padding_mask=None, cache=None, cache_ctx=None):
        h = to_autocast_dtype(self.input_layernorm(x))
        x = x + self.self_attn(h, cos, sin, causal, key_padding_mask, cache, cache_ctx)
        return x + self.mlp(to_autocast_dtype(self.post_attention_layernorm(x)))


def to_autocast_dtype(x):
    """x in autocast's dtype when autocast is on (else x). Autocast casts a linear's input at
    every linear and the graph keeps each cast for backward: q/k/v would save three bf16 copies
    of the same normed x, gate/up two. One cast up front, shared, saves 4 * 2 * H bytes a token
    a layer (16 KiB at Qwen3-1.7B shape); the values are the same."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


# -----------------------------------------------------------------------------
# the model


class Qwen3(nn.Module):
    def __init__(self, config, num_labels=None, causal=None):
        super().__init__()
        if num_labels is not None:
            config.num_labels = num_labels
        if causal is not None:
            config.is_causal = causal
        self.config = config
        self.activation_checkpointing = False  # see set_activation_checkpointing
        # module names mirror transformers' so state_dict keys are the checkpoint's keys
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.model.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.num_labels is not None:  # compressor: token classification head
            self.score = nn.Linear(config.hidden_size, config.num_labels)
        else:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            if config.tie_word_embeddings:
                self.lm_head.weight = self.model.embed_tokens.weight

    # ---- forward paths

    def hidden(self, input_ids, kv_cache=None, input_pos=None, attention_mask=None):
        """Final hidden states [B, T, H] (final norm applied, no head). `attention_mask` [B, T]
        (1 = real token) masks padded keys; `kv_cache` + `input_pos` [B] run incremental decoding."""
        B, T = input_ids.shape
        x = self.model.embed_tokens(input_ids)
        if kv_cache is not None:
            if input_pos is None:
                raise ValueError('kv_cache given without input_pos (each row\'s start position, shape [B])')
            input_pos = torch.as_tensor(input_pos, device=input_ids.device).long().view(B)
            positions = input_pos[:, None] + torch.arange(T, device=input_ids.device)
        else:
            positions = torch.arange(T, device=input_ids.device)[None].expand(B, T)
        if not positions.is_cuda and positions.max().item() >= self.config.max_position_embeddings:
            raise ValueError(f'position {positions.max().item()} >= max_position_embeddings '
                             f'{self.config.max_position_embeddings}')
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        causal = self.config.is_causal
        cache_ctx = None if kv_cache is None else self._cache_context(kv_cache, positions, x)
        recompute = self.activation_checkpointing and kv_cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            if recompute:  # keep only the block's input; its inside is recomputed in backward
                x = checkpoint(layer, x, cos, sin, causal, attention_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, causal, attention_mask, None if kv_cache is None else kv_cache[i], cache_ctx)
        return self.model.norm(x)

    def _cache_context(self, kv_cache, positions, x):
        """What every layer's cached attention shares: the scatter index of the new slots, and
        the visibility mask (query at absolute position p sees slots 0..p of its row)."""
        k0 = kv_cache[0][0]
        B, n_kv, S, hd = k0.shape
        T = positions.shape[1]
        flash = (flash_attn_with_kvcache is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
                 and T == 1)
        ctx = {'index': positions[:, None, :, None].expand(B, n_kv, T, hd), 'flash': flash}
        if flash:
            ctx['seqlens'] = (positions[:, 0] + 1).int()
        else:
            ctx['mask'] = (torch.arange(S, device=x.device)[None, None, :] <= positions[:, :, None])[:, None]  # [B,1,T,S]
        return ctx

    def forward(self, input_ids, targets=None, kv_cache=None, input_pos=None, attention_mask=None,
                return_hidden=False, target_weights=None):
        """Logits [B, T, V] (or [B, T, num_labels] for the classifier). With `targets` [B, T]
        (already shifted, -100 = ignore) returns the mean cross-entropy instead, computed in
        chunks through the LM head so the [B*T, V] fp32 logits are never all alive at once.
        `return_hidden=True` returns self.hidden(...) (the RL loss goes through DDP's forward
        this way and applies the LM head itself, fused with the log-prob kernel). `target_weights`
        [B, T] (optional) weighs each target's term; the sum is still divided by the target count."""
        h = self.hidden(input_ids, kv_cache, input_pos, attention_mask)
        if return_hidden:
            return h
        if self.config.num_labels is not None:
            logits = self.score(h)
            if targets is None:
                return logits
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        if targets is None:
            return self.lm_head(h)
        return lm_loss(h, self.lm_head.weight, targets, target_weights)

    def compile_blocks(self, backend='inductor'):
        """torch.compile each transformer block in place (dynamic shapes: training batches vary in
        length). In place, so state_dict keys keep their names (no `_orig_mod.` prefix); only the
        blocks, because the chunked CE loss has Python-side checks that would break the graph
        and recompile at every new shape. The blocks share one compiled graph. Works with
        activation checkpointing (the compiled block is what gets recomputed)."""
        for block in self.model.layers:
            block.compile(dynamic=True, backend=backend)
        return self

    def set_activation_checkpointing(self, on=True):
        """Per-block activation checkpointing of training forwards (grad on, no KV cache): a block
        keeps only its input (4H bytes a token, not ~118 KiB at Qwen3-1.7B shape, memplan.py) and
        is recomputed in backward (~+33% step FLOPs). Same gradients. Set before DDP/FSDP."""
        self.activation_checkpointing = bool(on)
        return self

    # ---- KV cache

    def make_kv_cache(self, batch_size, max_len, dtype=None, device=None):
        """Preallocated cache: a list with one (k, v) pair per layer, each [B, n_kv, max_len, head_dim]."""
        p = self.model.embed_tokens.weight
        dtype, device = dtype or p.dtype, device or p.device
        shape = (batch_size, self.config.num_key_value_heads, max_len, self.config.head_dim)
        return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                for _ in range(self.config.num_hidden_layers)]

    # ---- training helpers

    def init_weights(self, seed=None):
        """Init for training from scratch: N(0, 0.02) for linears/embeddings, residual output
        projections scaled by 1/sqrt(2*layers) (GPT-2), norms at 1."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if p.dim() == 1:
                if name.endswith('bias'):
                    nn.init.zeros_(p)
                else:
                    nn.init.ones_(p)
            else:
                s = std / math.sqrt(2 * self.config.num_hidden_layers) if name.endswith(('o_proj.weight', 'down_proj.weight')) else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * s)
        return self

    def num_params(self, non_embedding=False):
        n = sum(p.numel() for p in self.parameters())  # parameters() dedups a tied head
        if non_embedding:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len):
        """Training FLOPs per token (forward + backward = 3x forward): 6 * matmul params
        (the LM head counted, the embedding lookup not) + attention 6 * 2 * L * T * heads * head_dim
        (QK^T and AV, averaged over causal positions would halve it; we count the full square as
        is customary for MFU)."""
        cfg = self.config
        matmul_params = self.num_params(non_embedding=True)
        if cfg.num_labels is None and cfg.tie_word_embeddings:
            matmul_params += cfg.vocab_size * cfg.hidden_size
        attn = 12 * cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * cfg.head_dim
        return 6 * matmul_params + attn

    def resize_token_embeddings(self, new_vocab_size, n_trained=None):
        """Grow (or shrink) the vocabulary for added special tokens. New rows = the mean of the
        trained rows [0, n_trained) (default: every old row), see init_token_rows. A tied head
        stays tied."""
        old = self.model.embed_tokens.weight
        n_old = old.shape[0]
        if new_vocab_size == n_old:
            return self
        n = min(n_old, new_vocab_size)
        emb = nn.Embedding(new_vocab_size, old.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            emb.weight[:n] = old[:n]
        self.model.embed_tokens = emb
        if self.config.num_labels is None:
            head = self.lm_head.weight
            self.lm_head = nn.Linear(old.shape[1], new_vocab_size, bias=False, device=old.device, dtype=old.dtype)
            if self.config.tie_word_embeddings:
                self.lm_head.weight = emb.weight
            else:
                with torch.no_grad():
                    self.lm_head.weight[:n] = head[:n]
        self.config.vocab_size = new_vocab_size
        if new_vocab_size > n_old:
            self.init_token_rows(range(n_old, new_vocab_size), min(n_old, n_trained or n_old))
        return self

    def init_token_rows(self, ids, n_trained):
        """Rows `ids` of the embedding (and of an untied LM head) become the mean of the trained
        rows [0, n_trained) not in `ids`: a new token starts as the average token, its logit as
        the average logit, instead of whatever the checkpoint left in an unused row."""
        ids = sorted(set(int(i) for i in ids))
        rows = self.model.embed_tokens.weight.shape[0]
        if ids and not (0 <= ids[0] and ids[-1] < rows):
            raise ValueError(f'init_token_rows: ids {ids[0]}..{ids[-1]} outside the {rows} embedding rows')
        if not 0 < n_trained <= rows:
            raise ValueError(f'init_token_rows: n_trained={n_trained} must be in 1..{rows} (embedding rows)')
        keep = torch.ones(n_trained, dtype=torch.bool)
        keep[[i for i in ids if i < n_trained]] = False
        weights = [self.model.embed_tokens.weight]
        if self.config.num_labels is None and not self.config.tie_word_embeddings:
            weights.append(self.lm_head.weight)
        with torch.no_grad():
            for w in weights:
                w[ids] = w[:n_trained][keep.to(w.device)].float().mean(0).to(w.dtype)
        return ids

    def fit_vocab(self, tokenizer_vocab_size, n_trained):
        """Make the model fit a tokenizer of `tokenizer_vocab_size` tokens whose first n_trained
        ids the checkpoint was trained on (trained_vocab_size); ids past them are new. Grows the
        embedding when the tokenizer is larger; never shrinks it (Qwen3 pads 151,669 tokens to
        151,936 rows, and budget tokens appended to its tokenizer land in those padding rows,
        where no resize would notice them). Every new id gets the mean of the trained rows.
        Returns the new ids (empty when the checkpoint knows every token)."""
        rows = self.model.embed_tokens.weight.shape[0]
        n_trained = min(n_trained, rows)
        if tokenizer_vocab_size > rows:
            self.resize_token_embeddings(tokenizer_vocab_size, n_trained)
        return self.init_token_rows(range(n_trained, tokenizer_vocab_size), n_trained)

    # ---- checkpoint I/O (HF format)

    def save_pretrained(self, save_dir, max_shard_bytes=5 * 2**30):
        """Write config.json + model.safetensors (sharded with model.safetensors.index.json
        above max_shard_bytes). Each file is written to a temp name and renamed into place."""
        os.makedirs(save_dir, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.num_labels is None and self.config.tie_word_embeddings:
            tensors.pop('lm_head.weight', None)  # tied: stored once, as the embedding
        dtype_name = str(next(iter(tensors.values())).dtype).replace('torch.', '')
        self.config.torch_dtype = dtype_name
        shards, current, size = [], {}, 0
        for k in sorted(tensors):
            nbytes = tensors[k].numel() * tensors[k].element_size()
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[k] = tensors[k]
            size += nbytes
        shards.append(current)
        names = ['model.safetensors'] if len(shards) == 1 else \
            [f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))]
        for name, shard in zip(names, shards):
            tmp = os.path.join(save_dir, '.tmp-' + name)
            save_file(shard, tmp, metadata={'format': 'pt'})
            os.replace(tmp, os.path.join(save_dir, name))
        if len(shards) > 1:
            weight_map = {k: name for name, shard in zip(names, shards) for k in shard}
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            atomic_write_json(os.path.join(save_dir, 'model.safetensors.index.json'),
                              {'metadata': {'total_size': total}, 'weight_map': weight_map})
        atomic_write_json(os.path.join(save_dir, 'config.json'), self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_hub_id, dtype=None, device=None, num_labels=None, causal=None):
        """Load an HF Qwen3 folder or hub id (single or sharded safetensors). Every expected
        tensor must be present with the right shape. With num_labels (the compressor), a causal
        LM checkpoint loads into the classifier variant and the head starts fresh."""
        folder = resolve_model_dir(path_or_hub_id)
        config = Qwen3Config.from_json(os.path.join(folder, 'config.json'))
        fresh_head = num_labels is not None and config.num_labels is None
        if num_labels is not None:
            if config.num_labels not in (None, num_labels):
                raise ValueError(f'{folder}: checkpoint has num_labels={config.num_labels}, asked for {num_labels}')
            config.num_labels = num_labels
            config.is_causal = False if causal is None else causal
        elif causal is not None:
            config.is_causal = causal
        with torch.device('meta'):
            model = cls(config)
        expected = model.state_dict()
        if config.num_labels is None and config.tie_word_embeddings:
            expected.pop('lm_head.weight')
        if fresh_head:
            expected = {k: v for k, v in expected.items() if not k.startswith('score.')}
        # which file holds which tensor
        index_path = os.path.join(folder, 'model.safetensors.index.json')
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)['weight_map']
        elif os.path.exists(os.path.join(folder, 'model.safetensors')):
            weight_map = None
        else:
            raise FileNotFoundError(f'{folder}: no model.safetensors or model.safetensors.index.json')
        files = sorted(set(weight_map.values())) if weight_map else ['model.safetensors']
        loaded = {}
        for name in files:
            path = os.path.join(folder, name)
            try:
                with safe_open(path, framework='pt') as f:
                    for k in f.keys():
                        if k in expected or (k == 'lm_head.weight' and config.tie_word_embeddings):
                            loaded[k] = f.get_tensor(k)
            except FileNotFoundError:
                raise FileNotFoundError(f'{path}: shard listed in the index is missing') from None
            except Exception as e:
                raise ValueError(f'{path}: cannot read safetensors file ({e})') from None
        for k, ref in expected.items():
            if k not in loaded:
                raise KeyError(f'{folder}: checkpoint is missing tensor {k!r} (expected shape {tuple(ref.shape)})')
            if tuple(loaded[k].shape) != tuple(ref.shape):
                raise ValueError(f'{folder}: tensor {k!r} has shape {tuple(loaded[k].shape)}, '
                                 f'expected {tuple(ref.shape)} from config.json')
        dtype = dtype or getattr(torch, str(config.torch_dtype), torch.float32)
        device = device or 'cpu'
        model = model.to_empty(device=device).to(dtype)
        if config.num_labels is None and config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight  # to_empty broke the tie
        if fresh_head:
            with torch.no_grad():
                model.score.weight.normal_(0.0, config.initializer_range)
                model.score.bias.zero_()
            print(f'{folder}: loaded a causal LM checkpoint into the token classifier; '
                  f'the {num_labels}-label head is initialized fresh')
        with torch.no_grad():
            params = model.state_dict()
            for k, t in loaded.items():
                if k in params and not (k == 'lm_head.weight' and config.num_labels is None and config.tie_word_embeddings):
                    params[k].copy_(t)
        return model


# -----------------------------------------------------------------------------
# helpers


def lm_loss(hidden, weight, targets, target_weights=None):
    """Mean next-token cross-entropy over targets != -100 through the LM head:
    CE = logsumexp(h W^T) - (h W^T)[target], by kernels.py's fused log-probs (token chunks, never
    the full [N, V] logits; backward recomputes each chunk in the forward's dtype). Only the
    supervised rows go through the head: prompts and padding are ~1/4 of an SFT batch's
    positions, and their logits would cost the head's matmuls and softmax passes for a zero term.
    With target_weights w: sum_i w_i CE_i / N (N = the target count, so w = 1 is the plain mean)."""
    t = targets.flatten()
    keep = (t != -100).nonzero().squeeze(1)  # none kept: a zero loss, zero gradients (DDP sees every weight)
    h = hidden.flatten(0, 1).index_select(0, keep)
    token_logprobs = fused_linear_token_logprobs(h, weight, t.index_select(0, keep))
    if target_weights is not None:
        token_logprobs = token_logprobs * target_weights.flatten().index_select(0, keep).to(token_logprobs.dtype)
    return -token_logprobs.sum() / max(keep.numel(), 1)


def trained_vocab_size(model_dir, default):
    """How many token ids the checkpoint in model_dir was trained with: 1 + the largest id of its
    own tokenizer.json (model vocabulary and added tokens). Embedding rows at or past it never
    saw a token. `default` (say, the embedding's row count) when the folder has no tokenizer.json."""
    path = os.path.join(model_dir, 'tokenizer.json')
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        try:
            tok = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}: not valid JSON ({e})') from None
    vocab = (tok.get('model') or {}).get('vocab')
    if isinstance(vocab, dict):  # BPE / WordPiece / WordLevel: token -> id
        top = max(vocab.values(), default=-1)
    elif isinstance(vocab, list):  # Unigram: [token, score] per id
        top = len(vocab) - 1
    else:
        raise ValueError(f"{path}: no model.vocab (dict or list) to count the tokenizer's ids from")
    return 1 + max([top] + [int(t['id']) for t in tok.get('added_tokens') or []])


def resolve_model_dir(path_or_hub_id):
    """A local folder as is; otherwise a hub id downloaded (or found in the cache when
    HF_HUB_OFFLINE=1) through huggingface_hub."""
    if os.path.isdir(path_or_hub_id):
        return path_or_hub_id
    if os.path.exists(path_or_hub_id):
        raise NotADirectoryError(f'{path_or_hub_id}: expected a checkpoint folder, got a file')
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(path_or_hub_id, allow_patterns=['*.json', '*.safetensors', '*.txt', '*.model'])
    except Exception as e:
        raise FileNotFoundError(f'{path_or_hub_id}: not a local folder and not loadable from the hub '
                                f'(HF_HUB_OFFLINE={os.environ.get("HF_HUB_OFFLINE", "0")}): {e}') from None
