"""
The Extra-CoT data format: modes and <COMP_xx> budget tokens, the Qwen3 chat format with
<think> (and the chat template saved with every tokenizer), the SFT example builder with
loss masks, response parsing, and padding SFT examples into (x, y) batches. Everything that
turns a record into token ids and generated ids back into a response lives here; the
tokenizer itself is tokenizer.py, the synthetic corpus corpus.py.

    from data import render_prompt, render_sft_example, parse_response, answer_text
    from tokenizer import load_tokenizer
    tok = load_tokenizer('out/data/tokenizer')      # or a Qwen3 folder / hub id
    ids, loss_mask = render_sft_example(question, cot, answer_text('19'), '0.4', tok)

The format (the Extra-CoT paper, Stage 2, "prefix mirror"): the user turn ends with the
budget token; for a fixed ratio the assistant turn starts by repeating it, then the
(compressed) thinking, then the final answer:
    user:      Please reason step by step, ... \\boxed{}.\\n{question} <COMP_40>
    assistant: <COMP_40>\\n<think>\\n{cot}\\n</think>\\n\\n{answer}<|im_end|>
'auto' (POLICY mode) leaves the budget token to the model; 'none' has no token at all.

The CHAT_TEMPLATE below is Qwen3's template plus the budget mirror, so apply_chat_template
(transformers, vLLM) renders exactly `render_prompt` for every mode (Qwen3's own template
would drop the mirrored token).
"""
import json

import torch

# -----------------------------------------------------------------------------
# modes, budget tokens, chat constants

BUDGETS = [0.2, 0.4, 0.6, 0.8, 1.0]  # the fixed compression ratios: the one list every stage uses
FIXED_MODES = [f'{b:.1f}' for b in BUDGETS]  # their mode names '0.2'..'1.0' (token mirrored in the prompt)
MODES = ['none'] + FIXED_MODES + ['auto']  # 'none' = no budget token at all, 'auto' = POLICY
BUDGET_TOKENS = {**{m: f'<COMP_{round(100 * b)}>' for m, b in zip(FIXED_MODES, BUDGETS)},
                 'auto': '<COMP_AUTO>'}  # '0.2' -> '<COMP_20>' .. '1.0' -> '<COMP_100>'; token ids follow this order
DEFAULT_DATA_DIR = 'out/data'  # where `python corpus.py` writes the corpus and tokenizer/
PAD_TOKEN, IM_START, IM_END = '<|endoftext|>', '<|im_start|>', '<|im_end|>'
THINK_START, THINK_END = '<think>', '</think>'
PROMPT_PREFIX = "Please reason step by step, and put your final answer within \\boxed{}.\n"
IGNORE_INDEX = -100  # target value that F.cross_entropy ignores
# The system turn of every prompt, for every stage: SFT data, teacher labels, rollouts, the
# compressor's data build and evaluation all render prompts through render_prompt, which
# reads it here and nowhere else. None = no system turn (Qwen3's template adds none by
# default; no model here was trained with one). Changing it means retraining every stage.
SYSTEM_PROMPT = None


def mode_name(mode):
    """The one mode normalization: 0.4 -> '0.4', '1' -> '1.0', 'auto' -> 'auto', and 'base'
    (the evaluator's and the paper's name for the plain prompt) -> 'none'. Anything else,
    True / False included, is a ValueError naming the value."""
    if isinstance(mode, str) and mode in MODES:
        return mode
    if mode == 'base':
        return 'none'
    try:
        name = None if isinstance(mode, bool) else f"{float(mode):.1f}"
    except (TypeError, ValueError):
        name = None
    if name not in FIXED_MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES + ['base']} or a ratio in {BUDGETS}")
    return name


def shown_mode(mode):
    """A mode as file names and the report show it: the plain prompt is 'base', as in the paper."""
    mode = mode_name(mode)
    return 'base' if mode == 'none' else mode


def budget_name(mode):
    """The fixed budget '0.2'..'1.0' that a mode or a chosen budget names (0.4, '0.4', ...);
    None for None, 'none', 'base' and 'auto' (no fixed budget). Bad values: mode_name's error."""
    name = None if mode is None else mode_name(mode)
    return name if name in FIXED_MODES else None


def answer_text(gold):
    """The answer written after </think>."""
    return f"The answer is \\boxed{{{gold}}}."


# -----------------------------------------------------------------------------
# chat format

def render_chat(messages, add_generation_prompt=False):
    """Qwen3's chat template (as transformers' apply_chat_template renders it, thinking mode,
    no tools) for system / user / assistant messages. The assistant turns after the last
    user query render as '<think>\\n{reasoning}\\n</think>\\n\\n{content}' where reasoning is
    whatever sits between <think> and </think> in content (text before <think> is dropped);
    earlier assistant turns keep only their final content."""
    out = ''
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get('role') not in ('system', 'user', 'assistant'):
            raise ValueError(f"message {i}: expected a dict with role system/user/assistant, got {m!r}")
    if messages and messages[0]['role'] == 'system':
        out += f"{IM_START}system\n{messages[0]['content']}{IM_END}\n"
    last_query = len(messages) - 1  # the last user turn that is not a tool response
    for i in range(len(messages) - 1, -1, -1):
        c = messages[i].get('content')
        if messages[i]['role'] == 'user' and isinstance(c, str) and not (
                c.startswith('<tool_response>') and c.endswith('</tool_response>')):
            last_query = i
            break
    for i, m in enumerate(messages):
        content = m['content'] if isinstance(m.get('content'), str) else ''
        if m['role'] == 'user' or (m['role'] == 'system' and i > 0):
            out += f"{IM_START}{m['role']}\n{content}{IM_END}\n"
        elif m['role'] == 'assistant':
            reasoning = m.get('reasoning_content') if isinstance(m.get('reasoning_content'), str) else None
            if reasoning is None:
                reasoning = ''
                if THINK_END in content:
                    reasoning = content.split(THINK_END)[0].rstrip('\n').split(THINK_START)[-1].lstrip('\n')
                    content = content.split(THINK_END)[-1].lstrip('\n')
            if i > last_query and (i == len(messages) - 1 or reasoning):
                out += f"{IM_START}assistant\n{THINK_START}\n{reasoning.strip(chr(10))}\n{THINK_END}\n\n{content.lstrip(chr(10))}"
            else:
                out += f"{IM_START}assistant\n{content}"
            out += f"{IM_END}\n"
    if add_generation_prompt:
        out += f"{IM_START}assistant\n"
    return out


# The chat template saved with every tokenizer (tokenizer_config.json), so that transformers'
# apply_chat_template and vLLM's chat endpoint build the prompts the model was trained on.
# It renders as render_chat above (Qwen3's template for system / user / assistant turns,
# reasoning_content, enable_thinking=False), plus one rule: when the last message is a user
# turn ending with a fixed budget token, the generation prompt mirrors it, as render_prompt
# does. <COMP_AUTO> and no token get the bare '<|im_start|>assistant\n'. Tools and the
# 'tool' role are not supported (the models here never saw them): it raises.
CHAT_TEMPLATE = (
    "{%- set budgets = " + json.dumps([BUDGET_TOKENS[m] for m in FIXED_MODES]) + " %}\n"
    "{%- if tools %}{{ raise_exception('this model was not trained with tools') }}{% endif %}\n"
    "{%- set ns = namespace(found=false, last_query=messages|length - 1, budget='') %}\n"
    "{%- for m in messages[::-1] %}\n"  # the last user turn that is not a tool response
    "  {%- if not ns.found and m.role == 'user' and m.content is string and not"
    " (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) %}\n"
    "    {%- set ns.found = true %}{%- set ns.last_query = (messages|length - 1) - loop.index0 %}\n"
    "  {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for m in messages %}\n"
    "  {%- if m.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unsupported role ' + m.role) }}{% endif %}\n"
    "  {%- set content = m.content if m.content is string else '' %}\n"
    "  {%- if m.role == 'system' and loop.first %}\n"
    "    {{- '<|im_start|>system\\n' + m.content + '<|im_end|>\\n' }}\n"
    "  {%- elif m.role != 'assistant' %}\n"
    "    {{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' }}\n"
    "  {%- else %}\n"
    "    {%- set reasoning = '' %}\n"
    "    {%- if m.reasoning_content is string %}\n"
    "      {%- set reasoning = m.reasoning_content %}\n"
    "    {%- elif '</think>' in content %}\n"
    "      {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "      {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "    {%- endif %}\n"
    "    {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}\n"
    "      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}\n"
    "    {%- else %}\n"
    "      {{- '<|im_start|>assistant\\n' + content }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_end|>\\n' }}\n"
    "  {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "  {{- '<|im_start|>assistant\\n' }}\n"
    "  {%- set last = messages[-1] if messages else {} %}\n"
    "  {%- if last.role == 'user' and last.content is string %}\n"
    "    {%- for b in budgets %}{%- if last.content.rstrip().endswith(b) %}{%- set ns.budget = b %}{%- endif %}"
    "{%- endfor %}\n"
    "  {%- endif %}\n"
    "  {{- ns.budget }}\n"
    "  {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "    {{- ('\\n' if ns.budget else '') + '<think>\\n\\n</think>\\n\\n' }}\n"
    "  {%- endif %}\n"
    "{%- endif %}\n"
)


def user_content(question, mode):
    """The user turn: instruction, question, and the budget token unless mode is 'none'."""
    mode = mode_name(mode)
    text = PROMPT_PREFIX + question
    return text if mode == 'none' else f"{text} {BUDGET_TOKENS[mode]}"


def render_prompt(question, mode, system=SYSTEM_PROMPT):
    """The generation prompt. Fixed modes end with the mirrored budget token (forced, so the
    model cannot ignore it); 'auto' and 'none' end at '<|im_start|>assistant\\n'. The stages
    never pass `system` (SYSTEM_PROMPT is the one policy); it exists to check the chat
    template against other system turns."""
    mode = mode_name(mode)
    messages = ([{'role': 'system', 'content': system}] if system is not None else [])
    messages.append({'role': 'user', 'content': user_content(question, mode)})
    prompt = render_chat(messages, add_generation_prompt=True)
    return prompt + BUDGET_TOKENS[mode] if mode in FIXED_MODES else prompt


def render_completion(cot, answer, mode, chosen=None):
    """What the assistant writes after render_prompt(...), up to and including <|im_end|>."""
    mode = mode_name(mode)
    body = f"{THINK_START}\n{cot}\n{THINK_END}\n\n{answer}{IM_END}"
    if mode == 'none':
        return body
    if mode == 'auto':
        if chosen is None or mode_name(chosen) not in FIXED_MODES:
            raise ValueError(f"mode 'auto' needs chosen in {FIXED_MODES}, got {chosen!r}")
        return BUDGET_TOKENS[mode_name(chosen)] + '\n' + body
    return '\n' + body


def render_sft_example(question, cot, answer, mode, tokenizer, chosen=None):
    """(ids, loss_mask): prompt and completion encoded separately and concatenated, so the
    prompt ids are exactly those generation starts from; mask 1 on completion tokens."""
    prompt_ids = tokenizer.encode(render_prompt(question, mode))
    completion_ids = tokenizer.encode(render_completion(cot, answer, mode, chosen))
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def record_to_sft_example(rec, tokenizer):
    """render_sft_example from a record: question, cot, mode (default 'none'), chosen (for
    'auto'), response (else answer_text(answer)). A record's own 'system' turn is refused:
    every stage renders SYSTEM_PROMPT."""
    where = f"record {rec.get('id', '?')!s}"
    for key in ('question', 'cot'):
        if key not in rec:
            raise KeyError(f"{where}: missing key '{key}'")
    if rec.get('system', SYSTEM_PROMPT) != SYSTEM_PROMPT:
        raise ValueError(f"{where}: key 'system' = {rec['system']!r}, but every stage renders data.SYSTEM_PROMPT = "
                         f"{SYSTEM_PROMPT!r} (evaluation and rollouts would see another prompt): drop the key")
    if rec.get('response') is None and 'answer' not in rec:
        raise KeyError(f"{where}: missing key 'answer' (or 'response')")
    response = rec.get('response') or answer_text(rec['answer'])
    try:
        return render_sft_example(rec['question'], rec['cot'], response, rec.get('mode', 'none'),
                                  tokenizer, chosen=rec.get('chosen'))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def parse_response(tok, ids):
    """Split generated ids (the one place that finds the think block): budget (mode of the
    first token if it is a budget token), think_closed, think_tokens and think_text (the ids
    strictly between the first <think> and the first </think> after it: their count, and
    their text with specials removed and stripped; None when unclosed), answer_text (after
    </think>, specials removed), text (full decode)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    budget = tok.id_to_budget.get(ids[0]) if ids else None
    start = ids.index(tok.think_start_id) if tok.think_start_id in ids else -1
    end = ids.index(tok.think_end_id, start + 1) if start >= 0 and tok.think_end_id in ids[start + 1:] else -1
    closed = end >= 0
    return {
        'budget': budget,
        'think_closed': closed,
        'think_tokens': end - start - 1 if closed else None,
        'think_text': tok.decode(ids[start + 1:end], skip_special_tokens=True).strip() if closed else None,
        'answer_text': tok.decode(ids[end + 1:], skip_special_tokens=True).strip() if closed else '',
        'text': tok.decode(ids),
    }


# -----------------------------------------------------------------------------
# SFT batches: (ids, loss_mask) pairs -> padded (x, y) for train_sft.py

def pad_batch(examples, pad_id, max_len=None):
    """(x, y) LongTensors [B, T] from (ids, loss_mask) pairs: x[t] = ids[t], y[t] = ids[t+1]
    when mask[t+1] == 1 else -100; right-padded (x with pad_id, y with -100). max_len caps
    T (each example is cut to max_len + 1 ids before shifting)."""
    rows = []
    for i, (ids, mask) in enumerate(examples):
        if len(ids) != len(mask):
            raise ValueError(f"example {i}: {len(ids)} ids but {len(mask)} mask values")
        if max_len is not None:
            ids, mask = ids[:max_len + 1], mask[:max_len + 1]
        rows.append((list(ids), list(mask)))
    T = max(max(len(ids) - 1 for ids, _ in rows), 1)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        if n <= 0:
            continue
        x[r, :n] = torch.tensor(ids[:-1])
        target = torch.tensor(ids[1:])
        y[r, :n] = torch.where(torch.tensor(mask[1:]) == 1, target, IGNORE_INDEX)
    return x, y


# -----------------------------------------------------------------------------
# target weights: the few tokens that carry a CoT's arithmetic and the POLICY decision

TOKEN_OTHER, TOKEN_DIGIT, TOKEN_SPACE, TOKEN_EQUALS, TOKEN_BUDGET = 0, 1, 2, 3, 4
MAX_RESULT_DIGITS = 8  # a result longer than this is weighted on its first 8 digits only


def token_classes(tok):
    """[V] int8: per token id, whether it decodes to one digit, to whitespace only, to '='
    (spaces around it allowed), to a fixed budget token (<COMP_20> .. <COMP_100>), or to anything
    else. Qwen's pre-tokenizer writes numbers one digit a token,
    so " 27 + 11 = 38." is [' ', '2', '7', ' +', ' ', '1', '1', ' =', ' ', '3', '8', '.']."""
    classes = torch.zeros(len(tok), dtype=torch.int8)
    for i in range(len(tok)):
        s = tok.decode([i])
        if len(s) == 1 and s.isdigit():
            classes[i] = TOKEN_DIGIT
        elif s and s.isspace():
            classes[i] = TOKEN_SPACE
        elif s.strip() == '=':
            classes[i] = TOKEN_EQUALS
    classes[[tok.budget_ids[m] for m in FIXED_MODES]] = TOKEN_BUDGET
    return classes


def target_weights(x, y, classes, result_weight=1.0, operand_weight=1.0, budget_weight=1.0):
    """[B, T] float loss weights of a padded batch's targets (x, y from pad_batch):
      result_weight   where y[t] is a digit of a result, the number right after '=' ("a op b = c": c);
      operand_weight  where y[t] is any other digit (an operand copied from the question or from the
                      step before, the final answer);
      budget_weight   where y[t] is a budget token: only a POLICY answer has one as a target, its
                      first token, the chosen budget (a fixed mode's prompt holds its token and the
                      mirrored prefix, neither a target);
      1               elsewhere.
    Whether a digit is a result reads the chain before it, x[t], x[t-1], ...: '=', an optional
    space, then the result's earlier digits. Padding targets (-100) get 1; lm_loss skips them."""
    cls_x = classes[x.clamp(min=0)]
    cls_y = torch.where(y >= 0, classes[y.clamp(min=0)], TOKEN_OTHER)

    def shifted(c, k):  # c[t - k], with TOKEN_OTHER before the start
        return torch.cat([torch.full_like(c[:, :k], TOKEN_OTHER), c[:, :-k]], 1) if k else c

    # after_equals[t]: the result starts right after x[t] ('=' or '= ')
    after_equals = (cls_x == TOKEN_EQUALS) | ((cls_x == TOKEN_SPACE) & (shifted(cls_x, 1) == TOKEN_EQUALS))
    in_result = after_equals.clone()
    digits_so_far = torch.ones_like(after_equals)
    for k in range(1, MAX_RESULT_DIGITS):  # x[t-k+1..t] are digits and the result starts after x[t-k]
        digits_so_far = digits_so_far & (shifted(cls_x, k - 1) == TOKEN_DIGIT)
        in_result = in_result | (digits_so_far & shifted(after_equals, k))
    is_digit = cls_y == TOKEN_DIGIT
    weights = torch.ones(y.shape, dtype=torch.float32, device=y.device)
    weights[is_digit] = float(operand_weight)
    weights[in_result & is_digit] = float(result_weight)
    weights[cls_y == TOKEN_BUDGET] = float(budget_weight)
    return weights
