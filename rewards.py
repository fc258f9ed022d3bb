"""
Rewards for Extra-CoT: answer extraction, safe answer equivalence, and the CHRPO reward terms.

Everything here is a pure function of strings and numbers, so the trainer, the evaluator
and the tests share one definition of "correct" and one definition of the reward.

    from rewards import extract_answer, is_equiv, check_integrity, r_main, r_ctrl
    pred = extract_answer(response_text)          # last balanced \\boxed{..}, or None
    ok = is_equiv(pred, gold)                     # never evals model text, time-bounded
    valid, why = check_integrity(parsed, finish_reason, ids)
    rm, rc = rollout_rewards(ok, valid, c, r, g_star)

Benchmark: `python bench_equiv.py`. Tests: `python -m pytest tests/test_rewards.py`.

Equivalence (is_equiv)
----------------------
1. Fast path, no sympy and no subprocess (the common case in RL): both answers are
   normalized as strings (\\text{}/\\mbox unwrapped, units after a number dropped, $, \\%,
   degrees, \\left/\\right, spacing macros, "x =" prefixes removed, \\dfrac -> \\frac ...);
   equal strings are equivalent. Then plain numbers are compared exactly as fractions:
   integers with thousands separators, decimals, a/b, \\frac{a}{b}, \\frac12, mixed numbers
   (2\\frac{1}{2}, "2 1/2"), percents (50\\% equals 50 and 0.5). Integers must match exactly;
   a non-integer matches within a relative 1e-6 (so 0.3333333 == 1/3, 0.33 != 1/3).
2. Symbolic path: a LaTeX/plain-math recursive-descent parser written here builds sympy
   objects from a whitelisted grammar (numbers, one-letter and greek symbols, + - * / ^ **
   !, \\frac, \\sqrt[n]{}, \\pi, \\infty, |x|, a few functions, implicit multiplication), then
   tuples, intervals, sets, unions, \\pm, matrices and equations are compared element-wise.
   Model text is never passed to eval/sympify. Two expressions are equal when they agree
   numerically at 50 digits (relative 1e-30, or REL_TOL when either holds a decimal):
   closed forms once, expressions with symbols at three fixed pseudo-random points;
   sympy.simplify is the fallback when a point cannot be evaluated. e and i are plain
   symbols (3+4i == 4i+3, but e^{i\\pi} != -1); an odd root of a negative number is real.
   Cheap guards run first, in this process: length <= MAX_SYMBOLIC_CHARS, bracket depth <=
   MAX_NESTING, no huge exponent/factorial literals, only whitelisted LaTeX commands. The
   parser also refuses powers whose value would exceed MAX_POW_BITS bits, symbolic powers
   above MAX_SYMBOLIC_EXPONENT and factorials above MAX_FACTORIAL. What passes runs in a
   persistent worker process (forked once); if it does not answer within `timeout`
   seconds it is killed, restarted on the next call, and the answer counts as not equal.
   Verdicts are cached per normalized pair. The worker is forked (spawned where fork is
   missing), so is_equiv cannot run inside a daemonic process (e.g. a DataLoader worker).

CHRPO rewards (our reconstruction: the paper's authors did not release theirs)
-----------------------------------------------------------------------------
Per rollout: chosen budget c in (0, 1] (None: the first token was not a budget token),
realized ratio r = n / L (think tokens / think tokens of the question's 1.0 answer),
teacher budget g* (None: all-fail question), correct, valid (check_integrity).

  huber(x)  = x^2 / (2 delta)        if |x| <= delta          (smooth-L1, slope 1 outside)
            = |x| - delta / 2        otherwise
  cal(c, r) = w_cal * huber(max(0, |r - c| - band))           0 inside the band
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
    correct,   c >= g*:  1 - (c - g*)                         c == g* is best here
    correct,   c <  g*:  1 + min(kappa, g* - c)               beat the teacher, capped at kappa
    incorrect, c <  g*:  -lambda_under * (1 + (g* - c))       safe shortening: always below ...
    incorrect, c >= g*:  -lambda_over                         ... this (lambda_under > lambda_over)

Defaults (DEFAULTS below) are ours, not the paper's; every one can be overridden by keyword:
band 0.1, huber_delta 0.05, w_cal 1.0, w_short 0.1, kappa 0.06, w_mode 0.5, lambda_under 0.6,
lambda_over 0.2, tier_clip 0.45, invalid_reward -1.0.

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

Degenerate output (is_degenerate): with at least degen_min_tokens tokens, either fewer than
degen_min_distinct of its 4-grams are distinct (the text is mostly a copy of itself), or it
ends with one block of <= degen_max_period tokens repeated >= degen_min_repeats times over
at least its last degen_min_tail tokens (so a long number like 1000000000 is not a loop).
"""

import multiprocessing as mp
import random
import re
import threading
from fractions import Fraction

# -----------------------------------------------------------------------------
# constants

DEFAULTS = dict(
    band=0.1,               # |r - c| <= band is calibrated: no penalty
    huber_delta=0.05,       # Huber (smooth-L1) switch from quadratic to linear
    w_cal=1.0,              # weight of the calibration penalty (slope past the band: > w_short, see below)
    w_short=0.1,            # shortness bonus per unit of (1 - r) for correct rollouts
    kappa=0.06,             # progress cap: most a correct rollout earns for being short
    w_mode=0.5,             # scale of the incorrect-rollout mode penalty inside R_main
    lambda_under=0.6,       # failing with c < g* (compressed below the teacher budget)
    lambda_over=0.2,        # failing with c >= g* (milder: the budget was not the problem)
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

MAX_ANSWER_CHARS = 2000      # longer answers only get a raw string comparison
MAX_SYMBOLIC_CHARS = 500     # longer answers never reach sympy
MAX_NESTING = 20             # bracket depth above this never reaches sympy
MAX_POW_BITS = 20000         # a numeric power may have at most this many bits
MAX_SYMBOLIC_EXPONENT = 200  # x^k with symbolic x: |k| at most this
MAX_FACTORIAL = 1000         # n! only for n <= this
MAX_ELEMENTS = 50            # tuples/sets longer than this are not compared symbolically
REL_TOL = 1e-6               # relative tolerance when a non-integer number is involved
WORKER_START_TIMEOUT = 60.0  # seconds allowed for the sympy worker to start

# -----------------------------------------------------------------------------
# answer extraction

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_SPACE = re.compile(r"\\boxed +([^\s{$][^\s$]*)")
_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is:?[ \t]*([^\n]+)")
_HASHES = re.compile(r"####[ \t]*([^\n]+)")


def _match_brace(text, open_idx):
    """Index just past the '}' matching the '{' at open_idx, or -1 if unbalanced."""
    depth = 0
    for k in range(open_idx, len(text)):
        ch = text[k]  # \{ \} are counted too: inside an answer they come in pairs
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return -1


def find_boxed(text):
    """Contents of every top-level \\boxed{..} / \\fbox{..} / '\\boxed 5' in text, in order.
    Boxes nested inside a box are part of it; an unbalanced box is skipped."""
    found = []  # (start, content)
    pos = 0
    while True:
        m = _BOX_OPEN.search(text, pos)
        if m is None:
            break
        end = _match_brace(text, m.end() - 1)
        if end < 0:  # unbalanced (e.g. truncated): look for later boxes
            pos = m.end()
            continue
        found.append((m.start(), text[m.end():end - 1]))
        pos = end
    for m in _BOX_SPACE.finditer(text):
        found.append((m.start(), m.group(1).rstrip(".,;")))
    return [content for _, content in sorted(found)]


def extract_answer(text):
    """The model's final answer: the last balanced \\boxed{..} (or \\fbox, '\\boxed 5');
    failing that the last 'The answer is (:) ..'; failing that the last '#### ..'; else None."""
    if not text:
        return None
    boxes = find_boxed(text)
    if boxes:
        return boxes[-1].strip()
    for pattern in (_ANSWER_IS, _HASHES):
        matches = pattern.findall(text)
        if matches:
            ans, prev = matches[-1], None
            while ans != prev:  # peel "$..$." in any order
                prev, ans = ans, ans.strip().strip("$").rstrip(".")
            return ans or None
    return None

# -----------------------------------------------------------------------------
# string normalization

_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|mathit|operatorname)\s*\{")
_UNIT_WORDS = re.compile(r"^([-+]?[\d.,/]*\d[\d.,/]*%?)\s+(?:[a-zA-Z]{2,}\.?(?:\^\d)?\s*)+$")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\\left|\\right|\\big|\\Big")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?$")
_ASSIGN = re.compile(r"^[a-zA-Z]\s*(?:=|\\in)\s*(?!.*=)")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree")
_MIXED_SLASH = re.compile(r"([-+]?\d+) (\d+)/(\d+)")
_FRAC_DIGITS = re.compile(r"\\frac(\d)(\d)")
_FRAC_DIGIT_BRACE = re.compile(r"\\frac(\d)\{")
_FRAC_BRACE_DIGIT = re.compile(r"\\frac\{([^{}]*)\}(\d)")
_SQRT_DIGIT = re.compile(r"\\sqrt(\d)")
_CHOICE = re.compile(r"\(([A-Ea-e])\)")


def _unwrap_text_macros(s):
    """\\text{abc} -> abc; a text macro of letters right after a number is a unit and goes."""
    out = []
    pos = 0
    while True:
        m = _TEXT_MACRO.search(s, pos)
        if m is None:
            out.append(s[pos:])
            break
        end = _match_brace(s, m.end() - 1)
        if end < 0:
            out.append(s[pos:])
            break
        before = s[pos:m.start()]
        content = s[m.end():end - 1]
        out.append(before)
        prev = "".join(out).rstrip()
        is_unit = re.fullmatch(r"[a-zA-Z .]*", content) and content.strip() and prev[-1:].isdigit()
        pos = end
        if is_unit:  # drop the unit's power too: 12\text{cm}^2 -> 12
            m_pow = re.match(r"\s*\^\s*\{?\d\}?", s[pos:])
            pos += m_pow.end() if m_pow else 0
        else:
            out.append(content)
    return "".join(out)


def normalize_answer(s):
    """Canonical string form of an answer (see the module docstring)."""
    s = str(s).strip()
    if _PLAIN_NUMBER.fullmatch(s):  # the common case: nothing to normalize
        return s
    s = s.replace("\\$", "").replace("$", "")
    if "\\" in s:  # LaTeX only
        s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
        s = _DEGREES.sub("", s)
        s = _unwrap_text_macros(s)
        s = _SPACING.sub(" ", s)
        s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    s = s.replace("°", "").replace("{,}", ",").replace("~", " ")
    s = " ".join(s.split()).rstrip(".").strip()
    if m := _UNIT_WORDS.match(s):
        s = m.group(1)
    s = _ASSIGN.sub("", s)
    if m := _MIXED_SLASH.fullmatch(s):  # "2 1/2" is a mixed number
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    s = s.replace(" ", "")
    if "\\" in s:  # \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}
        s = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_DIGIT_BRACE.sub(r"\\frac{\1}{", s)
        s = _FRAC_BRACE_DIGIT.sub(r"\\frac{\1}{\2}", s)
        s = _SQRT_DIGIT.sub(r"\\sqrt{\1}", s)
    while len(s) >= 2 and s[0] == "{" and _match_brace(s, 0) == len(s):
        s = s[1:-1]
    if m := _CHOICE.fullmatch(s):  # multiple choice "(C)" -> "C"
        s = m.group(1)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s

# -----------------------------------------------------------------------------
# fast numeric path (no sympy)

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_PLAIN = re.compile(rf"({_NUM})")
_SLASH = re.compile(rf"({_NUM})/({_NUM})")
_FRAC = re.compile(rf"([-+]?)\\frac\{{({_NUM})\}}\{{({_NUM})\}}")
_MIXED = re.compile(r"([-+]?\d+)\\frac\{(\d+)\}\{(\d+)\}")


def parse_number(s):
    """(value: Fraction, is_percent: bool) for a normalized plain number, else None."""
    if len(s) > 200:
        return None
    pct = s.endswith("%")
    if pct:
        s = s[:-1]
    try:
        if m := _PLAIN.fullmatch(s):
            return Fraction(m.group(1)), pct
        if m := _SLASH.fullmatch(s):
            den = Fraction(m.group(2))
            return (Fraction(m.group(1)) / den, pct) if den else None
        if m := _FRAC.fullmatch(s):
            den = Fraction(m.group(3))
            if not den:
                return None
            val = Fraction(m.group(2)) / den
            return (-val if m.group(1) == "-" else val), pct
        if m := _MIXED.fullmatch(s):
            whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if not den:
                return None
            frac = Fraction(num, den)
            return (whole - frac if m.group(1).startswith("-") else whole + frac), pct
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _numbers_close(a, b):
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False  # integers match exactly
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def _numbers_equiv(pa, pb):
    (a, a_pct), (b, b_pct) = pa, pb
    if _numbers_close(a, b):
        return True
    if a_pct and not b_pct:
        return _numbers_close(a / 100, b)
    if b_pct and not a_pct:
        return _numbers_close(a, b / 100)
    return False

# -----------------------------------------------------------------------------
# cheap guards before anything reaches sympy

_ALLOWED_COMMANDS = {
    "frac", "sqrt", "pi", "infty", "cdot", "times", "div", "pm", "cup", "begin", "end",
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp",
    "alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma", "tau",
    "rho", "epsilon", "varepsilon", "varphi",
}
_BIG_EXPONENT = re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*-?\d{7,}|\d{5,}\s*!")


def _nesting_depth(s):
    depth = best = 0
    for ch in s:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return best


def _passes_guards(s):
    if len(s) > MAX_SYMBOLIC_CHARS or _nesting_depth(s) > MAX_NESTING:
        return False
    if _BIG_EXPONENT.search(s):
        return False
    if len(re.findall(r"\^|\*\*", s)) > 10:
        return False
    for cmd in re.findall(r"\\([a-zA-Z]+)", s):
        if cmd not in _ALLOWED_COMMANDS:
            return False
    return True

# -----------------------------------------------------------------------------
# whitelisted parser: tokens -> sympy objects (runs inside the worker process)

_TOKEN = re.compile(r"(\d+\.\d*|\.\d+|\d+)|(\\[a-zA-Z]+)|([a-zA-Z])|(\*\*|[-+*/^!(){}\[\]|])")
_GREEK = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma",
          "tau", "rho", "epsilon", "varepsilon", "varphi"}
_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp"}
MAX_PARSE_DEPTH = 60


class ParseError(ValueError):
    pass


def _tokenize(s):
    toks, pos = [], 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise ParseError(f"unexpected character {s[pos]!r} at {pos}")
        toks.append(m.group(0))
        pos = m.end()
    return toks


def _safe_pow(base, exp):
    """base**exp, refusing results too large to compute quickly (9^{9^9}, x^{10^10})."""
    import sympy as sp
    if exp.is_Number:
        if base.is_Number:
            if base.is_Rational and base not in (0, 1, -1):
                bits = max(abs(base.p), abs(base.q)).bit_length()
                if abs(exp) * bits > MAX_POW_BITS:
                    raise ParseError("power too large")
            elif not base.is_Rational and abs(exp) > MAX_SYMBOLIC_EXPONENT:
                raise ParseError("power too large")
        elif abs(exp) > MAX_SYMBOLIC_EXPONENT:
            raise ParseError("exponent too large")
    return sp.Pow(base, exp)


def _safe_factorial(x):
    import sympy as sp
    if x.is_Integer:
        if x < 0 or x > MAX_FACTORIAL:
            raise ParseError("factorial out of range")
        return sp.factorial(x)
    if x.is_Number:
        raise ParseError("factorial of a non-integer")
    return sp.factorial(x)


class _Parser:
    """Recursive descent over the grammar
        expr    := term (('+'|'-') term)*
        term    := unary (('*'|'/'|\\cdot|\\times|\\div) unary | implicit power)*
        unary   := ('-'|'+') unary | power
        power   := postfix (('^'|'**') exponent)?          right-associative
        postfix := primary '!'*
        primary := number | letter | \\greek | \\pi | \\infty | (expr) | {expr} | [expr] | |expr|
                 | \\frac arg arg | \\sqrt([expr])? arg | \\func arg
    """

    def __init__(self, text):
        import sympy as sp
        self.sp = sp
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected=None):
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ParseError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self):
        e = self.expr()
        if self.peek() is not None:
            raise ParseError(f"trailing {self.peek()!r}")
        return e

    def expr(self):
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            raise ParseError("nested too deeply")
        left = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            left = left + right if op == "+" else left - right
        self.depth -= 1
        return left

    def starts_primary(self, tok):
        if tok is None:
            return False
        if tok in ("(", "{", "["):
            return True
        if tok[0].isdigit() or tok[0] == "." or tok[0].isalpha():
            return True
        return tok.startswith("\\") and tok[1:] not in ("cdot", "times", "div")

    def term(self):
        left = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times"):
                self.take()
                left = left * self.unary()
            elif tok in ("/", "\\div"):
                self.take()
                den = self.unary()
                if den == 0:
                    raise ParseError("division by zero")
                left = left / den
            elif self.starts_primary(tok):
                left = left * self.power()  # implicit multiplication: 2x, 2\pi, (x+1)(x-1)
            else:
                return left

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() in ("^", "**"):
            self.take()
            return _safe_pow(base, self.exponent())
        return base

    def exponent(self):
        if self.peek() == "-":
            self.take()
            return -self.exponent()
        return self.power()

    def postfix(self):
        e = self.primary()
        while self.peek() == "!":
            self.take()
            e = _safe_factorial(e)
        return e

    def group(self, open_, close):
        self.take(open_)
        e = self.expr()
        self.take(close)
        return e

    def arg(self):
        """A LaTeX macro argument: {expr}, or one digit / letter / command (\\frac12)."""
        tok = self.peek()
        if tok == "{":
            return self.group("{", "}")
        if tok is not None and tok[0].isdigit() and "." not in tok:
            if len(tok) > 1:
                self.toks[self.i] = tok[1:]  # \frac12: the first digit is the argument
            else:
                self.i += 1
            return self.sp.Integer(tok[0])
        if tok is not None and (tok[0].isalpha() or tok.startswith("\\")):
            return self.primary()
        raise ParseError(f"bad macro argument {tok!r}")

    def primary(self):
        sp = self.sp
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if len(tok) > 400:
                raise ParseError("number too long")
            return sp.Rational(tok) if "." in tok else sp.Integer(tok)
        if tok[0].isalpha():
            return sp.Symbol(tok)
        if tok == "(":
            self.i -= 1
            return self.group("(", ")")
        if tok == "{":
            self.i -= 1
            return self.group("{", "}")
        if tok == "[":
            self.i -= 1
            return self.group("[", "]")
        if tok == "|":
            e = self.expr()
            self.take("|")
            return sp.Abs(e)
        name = tok[1:]
        if name == "frac":
            num, den = self.arg(), self.arg()
            if den == 0:
                raise ParseError("division by zero")
            return num / den
        if name == "sqrt":
            if self.peek() == "[":
                n = self.group("[", "]")
                if n == 0:
                    raise ParseError("zeroth root")
                x = self.arg()
                if n.is_Integer and n % 2 == 1 and x.is_number and x.is_negative:
                    return -_safe_pow(-x, 1 / n)  # odd root of a negative is real: \sqrt[3]{-8} = -2
                return _safe_pow(x, 1 / n)
            return sp.sqrt(self.arg())
        if name == "pi":
            return sp.pi
        if name == "infty":
            return sp.oo
        if name in _GREEK:
            return sp.Symbol(name)
        if name in _FUNCS:
            tok = self.peek()
            x = self.primary() if tok in ("(", "{") else self.power()
            fn = {"ln": sp.log, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan}.get(name)
            return (fn or getattr(sp, name))(x)
        raise ParseError(f"unsupported token {tok!r}")


def parse_math(text):
    """A sympy expression from a normalized answer, through the whitelisted grammar only.
    Raises ParseError for anything outside it. Call it where a hang can be afforded
    (the worker); is_equiv does."""
    return _Parser(text).parse()

# -----------------------------------------------------------------------------
# answer structure: tuples, intervals, sets, unions, matrices, equations


def _split_top(s, seps):
    """Split s at depth-0 occurrences of any string in seps."""
    parts, depth, start, k = [], 0, 0, 0
    while k < len(s):
        ch = s[k]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            for sep in seps:
                if s.startswith(sep, k):
                    parts.append(s[start:k])
                    k += len(sep)
                    start = k
                    break
            else:
                k += 1
                continue
            continue
        k += 1
    parts.append(s[start:])
    return parts


def _outer_pair_closes_at_end(s):
    """True when the bracket at s[0] is closed by the bracket at s[-1] (intervals mix types)."""
    depth = 0
    for k, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return k == len(s) - 1
    return False


def _structure(s):
    """(kind, items) with kind in expr / seq / set / list / union / matrix / eq."""
    s = s.replace("%", "")
    parts = _split_top(s, ["\\cup"])
    if len(parts) > 1:
        return "union", [_structure(p) for p in parts]
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set", _split_top(s[2:-2], [","])
    m = re.fullmatch(r"\\begin\{([pbv]?matrix)\}(.*)\\end\{\1\}", s)
    if m:
        return "matrix", [row.split("&") for row in m.group(2).split("\\\\") if row]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _outer_pair_closes_at_end(s):
        items = _split_top(s[1:-1], [","])
        if len(items) > 1:
            return "seq", [s[0] + s[-1]] + items
    items = _split_top(s, [","])
    if len(items) > 1:
        return "list", items
    items = _split_top(s, ["\\pm"])
    if len(items) == 2:
        a, b = items
        return "list", [f"{a}+({b})", f"{a}-({b})"]
    items = _split_top(s, ["="])
    if len(items) == 2:
        return "eq", items
    return "expr", [s]


def _expr_equal(a_text, b_text, cache):
    import sympy as sp
    for t in (a_text, b_text):
        if t not in cache:
            try:
                cache[t] = parse_math(t)
            except (ParseError, ValueError, TypeError, ZeroDivisionError, RecursionError):
                cache[t] = None
    a, b = cache[a_text], cache[b_text]
    if a is None or b is None:
        return False
    if a == b:
        return True
    bad = (sp.oo, -sp.oo, sp.zoo, sp.nan)
    if a.has(*bad) or b.has(*bad):
        return False  # infinities only match structurally
    if a.is_Rational and b.is_Rational:  # exact numbers: the fast path's rule
        return _numbers_close(Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q)))
    diff = a - b
    if diff == 0:
        return True
    # numeric identity test at 50 digits (relative 1e-30, or REL_TOL when an answer holds a
    # decimal): closed forms once, expressions with symbols at
    # three fixed pseudo-random points in [1.1, 2.9] (a nonzero difference almost never
    # vanishes at all three); simplify only when the points cannot be evaluated
    symbols = sorted(diff.free_symbols, key=str)
    rng = random.Random(1234)
    points = [{x: sp.Rational(rng.randint(1100, 2900), 1000) for x in symbols}
              for _ in range(3 if symbols else 1)]
    tol = REL_TOL if "." in a_text + b_text else 1e-30  # a decimal is an approximation
    evaluated = 0
    for point in points:
        va, vb = sp.N(a.subs(point), 50), sp.N(b.subs(point), 50)
        if not (va.is_number and vb.is_number) or va.has(*bad) or vb.has(*bad):
            continue
        scale = max(1, abs(va), abs(vb))
        if bool(abs(va - vb) > tol * scale):
            return False
        evaluated += 1
    if evaluated == len(points):
        return True
    return sp.simplify(diff) == 0


def _match_unordered(xs, ys, equal):
    """Every x pairs with a distinct y under `equal` (greedy; lengths already equal)."""
    unused = list(ys)
    for x in xs:
        for k, y in enumerate(unused):
            if equal(x, y):
                del unused[k]
                break
        else:
            return False
    return True


def _items_equal(xs, ys, ordered, cache):
    if len(xs) != len(ys) or len(xs) > MAX_ELEMENTS:
        return False
    if ordered:
        return all(_expr_equal(x, y, cache) for x, y in zip(xs, ys))
    return _match_unordered(xs, ys, lambda x, y: _expr_equal(x, y, cache))


def _structures_equal(sa, sb, cache):
    (ka, ia), (kb, ib) = sa, sb
    if ka != kb:
        return False
    if ka == "expr":
        return _expr_equal(ia[0], ib[0], cache)
    if ka == "seq":
        return ia[0] == ib[0] and _items_equal(ia[1:], ib[1:], True, cache)
    if ka in ("set", "list"):
        return _items_equal(ia, ib, False, cache)
    if ka == "eq":  # lhs = rhs: same sides, or swapped
        return (_items_equal(ia, ib, True, cache) or _items_equal(ia, ib[::-1], True, cache))
    if ka == "matrix":
        return len(ia) == len(ib) and all(_items_equal(x, y, True, cache) for x, y in zip(ia, ib))
    if ka == "union":
        return len(ia) == len(ib) and _match_unordered(ia, ib, lambda x, y: _structures_equal(x, y, cache))
    return False


def symbolic_equiv(pred_norm, gold_norm):
    """Symbolic comparison of two normalized answers. Unbounded in time: call it through
    is_equiv, which runs it in the worker."""
    return _structures_equal(_structure(pred_norm), _structure(gold_norm), {})

# -----------------------------------------------------------------------------
# the time-bounded worker process

_worker = None            # (process, connection) or None
_worker_lock = threading.Lock()
_symbolic_cache = {}      # (pred_norm, gold_norm) -> bool, timeouts included
_SYMBOLIC_CACHE_SIZE = 20000


def _worker_main(conn):
    import sympy  # noqa: F401  (already imported when forked; imported here under spawn)
    conn.send("ready")
    while True:
        try:
            pred, gold = conn.recv()
        except (EOFError, OSError):
            return
        try:
            ok = bool(symbolic_equiv(pred, gold))
        except Exception:  # model text: any failure means "not shown equal"
            ok = False
        conn.send(ok)


def _start_worker():
    import sympy  # noqa: F401  import once here so that every forked restart is instant
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_worker_main, args=(child_conn,), daemon=True, name="rewards-sympy")
    proc.start()
    child_conn.close()
    if not parent_conn.poll(WORKER_START_TIMEOUT) or parent_conn.recv() != "ready":
        proc.kill()
        raise RuntimeError("rewards.py: the sympy worker process did not start")
    return proc, parent_conn


def _stop_worker():
    global _worker
    if _worker is not None:
        proc, conn = _worker
        proc.kill()
        proc.join()
        conn.close()
        _worker = None


def _symbolic_equiv_bounded(pred_norm, gold_norm, timeout):
    global _worker
    key = (pred_norm, gold_norm)
    if key in _symbolic_cache:
        return _symbolic_cache[key]
    with _worker_lock:
        if _worker is None or not _worker[0].is_alive():
            _stop_worker()
            _worker = _start_worker()
        proc, conn = _worker
        try:
            conn.send(key)
            ok = conn.recv() if conn.poll(timeout) else None
        except (EOFError, OSError, BrokenPipeError):
            ok = None
        if ok is None:  # too slow or crashed: kill it, the next call starts a fresh one
            _stop_worker()
            ok = False
    if len(_symbolic_cache) >= _SYMBOLIC_CACHE_SIZE:
        _symbolic_cache.clear()
    _symbolic_cache[key] = ok
    return ok

# -----------------------------------------------------------------------------
# equivalence


def is_equiv(pred, gold, timeout=1.0):
    """True when the predicted answer equals the gold one (see the module docstring).
    pred: model output (untrusted) or None; gold: reference answer (str or number).
    The symbolic part is bounded by `timeout` seconds of wall clock; a timeout is False."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return pred.strip() == gold.strip()
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    pn, gn = parse_number(p), parse_number(g)
    if pn is not None and gn is not None:
        return _numbers_equiv(pn, gn)
    if re.fullmatch(r"[A-Za-z ]{2,}", p) and re.fullmatch(r"[A-Za-z ]{2,}", g):
        return p.lower() == g.lower()  # word answers: "Monday" vs "monday"
    if not (_passes_guards(p) and _passes_guards(g)):
        return False
    return _symbolic_equiv_bounded(p, g, timeout)

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
    """w_cal * huber(max(0, |r - c| - band)): 0 inside the band; 0 when c or r is None."""
    cfg = _cfg(overrides, "calibration_penalty")
    if c is None or r is None:
        return 0.0
    excess = max(0.0, abs(r - c) - cfg["band"])
    return cfg["w_cal"] * huber(excess, cfg["huber_delta"])


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


def r_ctrl(c, g_star, correct, **overrides):
    """Control-token reward: the chosen budget c judged against the teacher budget g*
    (formulas in the module docstring). c None gets the minimum possible value."""
    cfg = _cfg(overrides, "r_ctrl")
    _check_budget("c", c, "r_ctrl")
    _check_budget("g_star", g_star, "r_ctrl")
    lam_u, lam_o, kappa = cfg["lambda_under"], cfg["lambda_over"], cfg["kappa"]
    if c is None:
        return -2.0 * max(lam_u, lam_o)
    if g_star is None:  # all-fail question: rapid recovery, larger budgets preferred
        return (1.0 if correct else 0.0) - lam_u * (1.0 - c)
    under = c < g_star - 1e-9
    if correct:
        return 1.0 + min(kappa, g_star - c) if under else 1.0 - (c - g_star)
    return -lam_u * (1.0 + (g_star - c)) if under else -lam_o


def rollout_rewards(correct, valid, c, r, g_star, **overrides):
    """(R_main, R_ctrl) for one rollout."""
    return (r_main(correct, valid, c, r, g_star, **overrides),
            r_ctrl(c, g_star, correct, **overrides))
