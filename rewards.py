"""
Rewards for Extra-CoT: the integrity checks of a rollout and the CHRPO reward terms.
(Answer extraction and equivalence live in grading.py.)

Everything here is a pure function of strings and numbers, so the trainer, the evaluator
and the tests share one definition of a valid rollout and one definition of the reward.

    from rewards import check_integrity, rollout_rewards
    valid, why = check_integrity(parsed, finish_reason, ids)
    rm, rc = rollout_rewards(correct, valid, c, r, g_star)

Tests: `python -m pytest tests/test_rewards.py`.

CHRPO rewards (our reconstruction: the paper's authors did not release theirs)
-----------------------------------------------------------------------------
Per rollout: chosen budget c in (0, 1] (None: the first token was not a budget token),
realized ratio r = n / L (think tokens / think tokens of the question's 1.0 answer),
teacher budget g* (None: all-fail question), correct, valid (check_integrity).

  huber(x)  = x^2 / (2 delta)        if |x| <= delta          (smooth-L1, slope 1 outside)
            = |x| - delta / 2        otherwise
  cal(c, r) = w_center * min(|r - c|, band)                   a gentle pull toward c inside
            + w_cal * huber(max(0, |r - c| - band))           the band, Huber past it
  mode      = min(kappa, w_short * (1 - r))                   correct: shorter earns more,
                                                              capped at kappa (progress capping)
            = -w_mode * lambda_under    incorrect, c < g*     safe shortening: failing below
            = -w_mode * lambda_over     incorrect, c >= g*    the teacher's budget costs more
            = 0                         incorrect, g* or c None
  R_main    = invalid_reward                                  if not valid
            = [correct] + clip(mode - cal, -tier_clip, +tier_clip)   otherwise
    (mode is 0 when use_mode_term=False, the "without R_mode" ablation). With tier_clip < 0.5
    and invalid_reward < -tier_clip: every valid correct > every valid incorrect > every
    invalid (hierarchy).

  R_ctrl (credited by the trainer to the control token only; R_main to the other tokens;
  "without R_ctrl" is the trainer's switch):
            = -2 * max(lambda_under, lambda_over)             c None: the minimum possible
    g* None:  [correct] - lambda_under * (1 - c)              rapid recovery: increasing in c
    correct,   c >= g*:  1 - w_over * (c - g*)                c == g* is best here
    correct,   c <  g*:  1 + min(kappa, g* - c)               beat the teacher, capped at kappa
    correct, |r - c| > band:  as incorrect (the two lines below)  kept budgets: an answer that
                                                              thought past c's band earns c nothing
    incorrect, c <  g*:  -lambda_under * (1 + (g* - c))       safe shortening: always below ...
    incorrect, c >= g*:  -lambda_over                         ... this (lambda_under > lambda_over)

Defaults (DEFAULTS below) are ours, not the paper's; every one can be overridden by keyword:
band 0.1, huber_delta 0.05, w_cal 1.0, w_center 0.0, w_short 0.1, kappa 0.06, w_mode 0.5,
lambda_under 0.6, lambda_over 0.2, w_over 1.0, tier_clip 0.45, invalid_reward -1.0.

Honest budgets (why calibration outweighs shortness): R_main is credited to the think and
answer tokens, not to the control token, so whatever it pays for short thinking teaches the
body to write below the budget it chose. With the earlier constants (w_cal 0.5, delta 0.1,
w_short 0.3, kappa 0.2) a correct c = 1.0 rollout at r = 0.76 netted +0.027 over meeting its
budget, and CHRPO learned to choose <COMP_100> and then under-run it. Now past the band the
penalty grows with slope w_cal = 1.0 (after the short quadratic zone of width delta) while
the bonus grows with slope w_short = 0.1, so under-running the chosen budget loses; and at a
fixed r, a budget whose band does not contain r always earns less in R_main than the budget
whose band does (`honest budgets`, a test). The shortness preference across budgets is the
control token's business (R_ctrl against g*); the bonus here is a small tie-breaker, capped
at kappa.

Kept budgets (why R_ctrl reads r): R_ctrl pays a correct answer for a small c (beating the
teacher), and R_main's calibration penalty just past the band is small (0.025 at |r - c| =
0.15). Without r, one seed's CHRPO named <COMP_20> for every question and thought at about
0.35 (mean |r - c| 0.153): the control token was paid for a budget the thinking ignored. So
a correct answer that left c's band earns the control token what a wrong one at c earns.

Centered budgets (w_center, off by default): with w_center = 0, R_main is flat inside the band
below r = 0.4 (no calibration penalty there, and the shortness bonus is already at its cap
kappa), so nothing holds the <COMP_20> mode's thinking at 0.2 while slightly longer thinking is
slightly more often right. In CHRPO on the embedded default its r drifted upward (2-step
questions in one run: 0.21 -> 0.27-0.29, a third of them past the band's edge; 1-step
questions in another: 0.20 -> 0.28, 43% past it), the kept-budget rule above failed those
answers in R_ctrl, and the control token left <COMP_20> (the second run: every question at
<COMP_40> from step 41 on). w_center > w_short makes r = c the best place inside the band
(`test_centering_pays_most_for_thinking_at_the_chosen_budget`): at 0.5 the 0.2 mode stayed at
r = 0.20-0.24 and kept its questions, but CHRPO then sent more 3-step questions to <COMP_20>
(their teacher budget) at a cost in accuracy, below the goal in one run of four (README,
Known gaps). The in-band slope is capped at band, so the honest-budgets order holds for any
w_center >= 0.

Degenerate output (is_degenerate): with at least degen_min_tokens tokens, either fewer than
degen_min_distinct of its 4-grams are distinct (the text is mostly a copy of itself), or it
ends with one block of <= degen_max_period tokens repeated >= degen_min_repeats times over
at least its last degen_min_tail tokens (so a long number like 1000000000 is not a loop).
The one definition of a loop: the SFT build (build_sft_data.py) drops own CoTs by it too, so
SFT never trains on a CoT that CHRPO would call invalid.
"""

import re

from grading import find_boxed

# -----------------------------------------------------------------------------
# constants

DEFAULTS = dict(
    band=0.1,               # |r - c| <= band is calibrated: no Huber penalty (w_center's slope only)
    huber_delta=0.05,       # Huber (smooth-L1) switch from quadratic to linear
    w_cal=1.0,              # weight of the calibration penalty (slope past the band: > w_short, see below)
    w_center=0.0,           # slope of the calibration penalty inside the band (> w_short: r = c is best there)
    w_short=0.1,            # shortness bonus per unit of (1 - r) for correct rollouts
    kappa=0.06,             # progress cap: most a correct rollout earns for being short
    w_mode=0.5,             # scale of the incorrect-rollout mode penalty inside R_main
    lambda_under=0.6,       # failing with c < g* (compressed below the teacher budget)
    lambda_over=0.2,        # failing with c >= g* (milder: the budget was not the problem)
    w_over=1.0,             # R_ctrl's price of a correct answer's budget above g*, per unit of budget
    tier_clip=0.45,         # |shaping| bound inside a correctness tier (< 0.5 keeps tiers apart)
    invalid_reward=-1.0,    # R_main of a rollout that fails the integrity checks
    use_mode_term=True,     # False: the "without R_mode" ablation
    degen_ngram=4,          # n of the n-grams in the distinct-ratio test
    degen_min_tokens=32,    # shorter sequences are never called degenerate
    degen_min_distinct=0.25,  # distinct n-grams / all n-grams below this: degenerate
    degen_max_period=32,    # longest repeated block looked for at the tail
    degen_min_repeats=4,    # tail block repeated this many times ...
    degen_min_tail=64,      # ... covering at least this many tokens: degenerate
)

# -----------------------------------------------------------------------------
# integrity: format, closed think, one boxed answer, not truncated, not degenerate


def _cfg(overrides, where):
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"{where}: unknown reward setting(s) {sorted(unknown)}; "
                       f"valid keys: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **overrides}
    if not cfg["tier_clip"] < 0.5:
        raise ValueError(f"{where}: tier_clip={cfg['tier_clip']} must be < 0.5 to keep tiers apart")
    if not cfg["invalid_reward"] < -cfg["tier_clip"]:
        raise ValueError(f"{where}: invalid_reward={cfg['invalid_reward']} must be < -tier_clip")
    if not cfg["w_center"] >= 0:
        raise ValueError(f"{where}: w_center={cfg['w_center']} must be >= 0 (a pull toward c, not away)")
    # a correct kept answer must beat a wrong one at any c >= g*: 1 - w_over * 0.8 > -lambda_over
    if not 0 <= cfg["w_over"] < (1 + cfg["lambda_over"]) / 0.8:
        raise ValueError(f"{where}: w_over={cfg['w_over']} must be in [0, (1 + lambda_over) / 0.8): above it "
                         f"a correct answer at c = 1.0 over g* = 0.2 earns less than a wrong one")
    return cfg


def is_degenerate(seq, **overrides):
    """True for repetitive output. seq: token ids (list / tensor) or text (split into words
    and punctuation). Thresholds: degen_* in DEFAULTS."""
    cfg = _cfg(overrides, "is_degenerate")
    if isinstance(seq, str):
        toks = re.findall(r"\w+|[^\w\s]", seq)
    else:
        toks = seq.tolist() if hasattr(seq, "tolist") else list(seq)
    n = cfg["degen_ngram"]
    if len(toks) < max(cfg["degen_min_tokens"], n):
        return False
    grams = [tuple(toks[k:k + n]) for k in range(len(toks) - n + 1)]
    if len(set(grams)) / len(grams) < cfg["degen_min_distinct"]:
        return True
    reps = cfg["degen_min_repeats"]
    for period in range(1, cfg["degen_max_period"] + 1):
        span = max(period * reps, cfg["degen_min_tail"])
        if span > len(toks):
            break
        tail = toks[-span:]
        if tail[period:] == tail[:-period]:  # the tail is periodic with this period
            return True
    return False


def check_integrity(parsed, finish_reason, ids=None, require_control=True, **overrides):
    """(valid, reasons) for one rollout. parsed: data.parse_response's dict (keys budget,
    think_closed, think_tokens, answer_text, text); finish_reason: the sampler's ('stop' is
    the only complete one); ids: the response token ids for the repetition test (else the
    text is used). Reasons: no_control_token, think_not_closed, no_boxed_answer,
    multiple_boxed_answers, truncated, degenerate."""
    for key in ("budget", "think_closed", "answer_text", "text"):
        if key not in parsed:
            raise KeyError(f"check_integrity: parsed response has no key {key!r} "
                           f"(keys: {sorted(parsed)})")
    reasons = []
    if require_control and parsed["budget"] is None:
        reasons.append("no_control_token")
    if not parsed["think_closed"]:
        reasons.append("think_not_closed")
    n_boxed = len(find_boxed(parsed["answer_text"] or ""))
    if n_boxed == 0:
        reasons.append("no_boxed_answer")
    elif n_boxed > 1:
        reasons.append("multiple_boxed_answers")
    if finish_reason != "stop":
        reasons.append("truncated")
    if is_degenerate(ids if ids is not None else (parsed["text"] or ""), **overrides):
        reasons.append("degenerate")
    return not reasons, reasons

# -----------------------------------------------------------------------------
# CHRPO reward terms


def _check_budget(name, value, where, allow_none=True):
    if value is None:
        if not allow_none:
            raise ValueError(f"{where}: {name} is None")
        return
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ValueError(f"{where}: {name}={value!r} must be a float in (0, 1] or None")


def huber(x, delta):
    """Smooth-L1: x^2 / (2 delta) for |x| <= delta, |x| - delta / 2 beyond (slope 1)."""
    x = abs(x)
    return x * x / (2 * delta) if x <= delta else x - delta / 2


def calibration_penalty(c, r, **overrides):
    """w_center * min(|r - c|, band) + w_cal * huber(max(0, |r - c| - band)): linear inside the
    band (0 with w_center = 0), Huber past it; 0 when c or r is None."""
    cfg = _cfg(overrides, "calibration_penalty")
    if c is None or r is None:
        return 0.0
    off = abs(r - c)
    excess = max(0.0, off - cfg["band"])
    return cfg["w_center"] * min(off, cfg["band"]) + cfg["w_cal"] * huber(excess, cfg["huber_delta"])


def mode_term(correct, c, r, g_star, **overrides):
    """The ratio-mode term of R_main: capped shortness bonus when correct, asymmetric
    penalty (lambda_under for c < g*, lambda_over for c >= g*) when incorrect."""
    cfg = _cfg(overrides, "mode_term")
    if not cfg["use_mode_term"]:
        return 0.0
    if correct:
        return 0.0 if r is None else min(cfg["kappa"], cfg["w_short"] * (1.0 - r))
    if c is None or g_star is None:
        return 0.0
    lam = cfg["lambda_under"] if c < g_star - 1e-9 else cfg["lambda_over"]
    return -cfg["w_mode"] * lam


def r_main(correct, valid, c, r, g_star, **overrides):
    """Sequence-level reward: invalid_reward if not valid, else
    [correct] + clip(mode - calibration, -tier_clip, tier_clip)."""
    cfg = _cfg(overrides, "r_main")
    _check_budget("c", c, "r_main")
    _check_budget("g_star", g_star, "r_main")
    if not valid:
        return float(cfg["invalid_reward"])
    if r is None or r < 0:
        raise ValueError(f"r_main: a valid rollout needs a realized ratio r >= 0, got {r!r}")
    shaping = mode_term(correct, c, r, g_star, **overrides) - calibration_penalty(c, r, **overrides)
    shaping = min(cfg["tier_clip"], max(-cfg["tier_clip"], shaping))
    return (1.0 if correct else 0.0) + shaping


def r_ctrl(c, g_star, correct, r=None, **overrides):
    """Control-token reward: the chosen budget c judged against the teacher budget g*
    (formulas in the module docstring). c None gets the minimum possible value. With the
    realized ratio r, a correct rollout whose thinking left c's band (|r - c| > band) is judged
    like an incorrect one at c: the control token is paid for a budget the thinking kept, not
    for naming a small one and thinking past it."""
    cfg = _cfg(overrides, "r_ctrl")
    _check_budget("c", c, "r_ctrl")
    _check_budget("g_star", g_star, "r_ctrl")
    lam_u, lam_o, kappa = cfg["lambda_under"], cfg["lambda_over"], cfg["kappa"]
    if c is None:
        return -2.0 * max(lam_u, lam_o)
    if g_star is None:  # all-fail question: rapid recovery, larger budgets preferred
        return (1.0 if correct else 0.0) - lam_u * (1.0 - c)
    under = c < g_star - 1e-9
    kept = r is None or abs(r - c) <= cfg["band"] + 1e-9
    if correct and kept:
        return 1.0 + min(kappa, g_star - c) if under else 1.0 - cfg["w_over"] * (c - g_star)
    return -lam_u * (1.0 + (g_star - c)) if under else -lam_o


def rollout_rewards(correct, valid, c, r, g_star, **overrides):
    """(R_main, R_ctrl) for one rollout."""
    return (r_main(correct, valid, c, r, g_star, **overrides),
            r_ctrl(c, g_star, correct, r, **overrides))
