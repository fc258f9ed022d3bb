"""
Grading for Extra-CoT: answer extraction, normalization and a safe, time-bounded answer
equivalence that works in any process (forked, spawned, daemonic pool workers, threads).

    from grading import extract_answer, is_equiv
    pred = extract_answer(response_text)          # last balanced \\boxed{..}, or None
    ok = is_equiv(pred, gold)                     # never evals model text, time-bounded

    python grading.py '\\frac{1}{2}' 0.5          # one verdict from the command line

Benchmark: `python bench_equiv.py`. Tests: `python -m pytest tests/test_grading.py`.

Equivalence (is_equiv)
----------------------
1. Fast path, no sympy and no subprocess (the common case in RL): both answers are
   normalized as strings (a whole-answer \\boxed{} unwrapped, any depth; \\text{}/\\mbox
   unwrapped, units after a number dropped, $, \\%, degrees, \\left/\\right, spacing macros,
   "x =" / "f(x) =" prefixes removed, \\dfrac/\\cfrac -> \\frac, \\dbinom -> \\binom,
   {n \\choose k} -> \\binom{n}{k}, repeating decimals 0.1\\overline{6} -> \\frac{1}{6}, a
   number's base subscript 2516_{8} -> 2516 (the question names the base), scientific
   notation 3.2\\times 10^{5} -> 3.2e5, one variable's range as an interval: x \\le 3 ->
   (-\\infty,3], 1 < x \\le 3 -> (1,3] ...); equal strings are equivalent. Then plain numbers
   are compared exactly as fractions: integers with thousands separators, decimals,
   e-notation (1.5e-3), a/b, \\frac{a}{b}, \\frac12, mixed numbers (2\\frac{1}{2}, "2 1/2"),
   percents. Integers must match exactly; a non-integer matches within a relative 1e-6
   (so 0.3333333 == 1/3, 0.33 != 1/3).
2. Symbolic path: a LaTeX/plain-math recursive-descent parser written here builds sympy
   objects from a whitelisted grammar (numbers, one-letter and greek symbols, + - * / ^ **
   !, \\frac, \\sqrt[n]{}, \\binom, \\pi, \\infty, |x|, functions with \\sin^2 x and
   \\log_{b} x, implicit multiplication), then tuples, intervals, sets and unordered lists,
   unions, \\pm, matrices and equations are compared element-wise. Model text is never
   passed to eval/sympify. Two expressions are equal when they agree numerically at 50
   digits (relative 1e-30, or REL_TOL when either holds a decimal): closed forms once,
   expressions with symbols at three fixed pseudo-random points; sympy.simplify is the
   fallback when a point cannot be evaluated. An odd root of a negative number is real.

Conventions, chosen for MATH and AMC answers:
- `i` is the imaginary unit (MATH writes complex answers as 3+4i, so \\sqrt{-4} == 2i) and
  `e` is Euler's number (e^{i\\pi} == -1; an answer using e as an unknown would be unusual
  there). Every other letter is a free symbol.
- A percent sign is dropped: 50\\% equals 50, as MATH's reference normalizer (strip_string,
  which deletes "\\%") has it; a percent also equals its fraction (50\\% == 0.5), since both
  spellings answer a "what percent" question.

Safety and time. Cheap guards run first, in the calling process: length <=
MAX_SYMBOLIC_CHARS, bracket depth <= MAX_NESTING, no huge exponent/factorial literals, only
whitelisted LaTeX commands. The parser also refuses powers and binomials whose value would
exceed MAX_POW_BITS bits, symbolic powers above MAX_SYMBOLIC_EXPONENT and factorials above
MAX_FACTORIAL. What passes runs in a sympy worker: a separate Python interpreter started
with `subprocess` (`python grading.py --worker`, JSON lines over pipes), one per calling
thread, owned by the process that started it. A subprocess is not a multiprocessing child,
so this works inside daemonic pool workers and DataLoader workers; a forked child never
uses its parent's worker (an at-fork hook forgets it) and starts its own; threads never
queue behind each other. If the worker does not answer within `timeout` seconds it is
killed, the answer counts as not equal, and the next call starts a fresh one (starting,
about a second for the sympy import, is not part of the bound; WORKER_START_TIMEOUT caps
it). A worker exits when its parent does. Verdicts are cached per normalized pair.
Needs select() on pipes: Linux and macOS.
"""

import atexit
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

# -----------------------------------------------------------------------------
# constants

MAX_ANSWER_CHARS = 2000      # longer answers only get a raw string comparison
MAX_SYMBOLIC_CHARS = 500     # longer answers never reach sympy
MAX_NESTING = 20             # bracket depth above this never reaches sympy
MAX_POW_BITS = 20000         # a numeric power or binomial may have at most this many bits
MAX_SYMBOLIC_EXPONENT = 200  # x^k with symbolic x: |k| at most this
MAX_FACTORIAL = 1000         # n! only for n <= this
MAX_ELEMENTS = 50            # tuples/sets longer than this are not compared symbolically
REL_TOL = 1e-6               # relative tolerance when a non-integer number is involved
WORKER_START_TIMEOUT = 60.0  # seconds allowed for the sympy worker to start
WORKER_COMMAND = [sys.executable, os.path.abspath(__file__), "--worker"]  # the sympy worker

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
_ASSIGN = re.compile(r"^[a-zA-Z](?:\([a-zA-Z]\))?\s*(?:=|\\in)\s*(?!.*=)")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree")
_MIXED_SLASH = re.compile(r"([-+]?\d+) (\d+)/(\d+)")
_FRAC_DIGITS = re.compile(r"\\frac(\d)(\d)")
_FRAC_DIGIT_BRACE = re.compile(r"\\frac(\d)\{")
_FRAC_BRACE_DIGIT = re.compile(r"\\frac\{([^{}]*)\}(\d)")
_SQRT_DIGIT = re.compile(r"\\sqrt(\d)")
_CHOICE = re.compile(r"\(([A-Ea-e])\)")
_COMMAND_SPACE_LETTER = re.compile(r"(\\[a-zA-Z]+) +([a-zA-Z])")
_FUNC_NAME = re.compile(r"\\operatorname\s*\{\s*(sin|cos|tan|cot|sec|csc|arcsin|arccos|arctan|log|ln|exp)\s*\}")
_CHOOSE = re.compile(r"\{([^{}]*)\\choose([^{}]*)\}")
_REPEATING = re.compile(r"(\d*)\.(\d{0,30})\\overline\{(\d{1,30})\}")
_BASE_SUBSCRIPT = re.compile(r"(?<![a-zA-Z\\])(\d+)_\{?(\d{1,2})\}?")
_SCIENTIFIC = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))(?:\\times|\\cdot|\*)10\^\{?([-+]?\d{1,3})\}?")
_INEQ_ONE = re.compile(r"(\{?[a-zA-Z]\}?)(<|>|\\leq?|\\geq?)([^<>=]+)")       # x\leq3 ({x}: from \le x)
_INEQ_TWO = re.compile(r"([^<>=]+?)(<|\\leq?)(\{?[a-zA-Z]\}?)(<|\\leq?)([^<>=]+)")  # 1<x\leq3
_MACRO_ALIASES = [  # spelling variants of one thing -> one spelling
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
    ("\\dbinom", "\\binom"), ("\\tbinom", "\\binom"), ("\\%", "%"),
    ("\\varnothing", "\\emptyset"), ("\\lvert", "|"), ("\\rvert", "|"), ("\\vert", "|"),
    ("\\langle", "("), ("\\rangle", ")"),  # a vector <1, 2> is the tuple (1, 2)
]


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


def _unwrap_boxes(s):
    """\\boxed{\\boxed{5}} -> 5: a box around the whole answer is no part of it."""
    while (m := _BOX_OPEN.match(s)) and _match_brace(s, m.end() - 1) == len(s):
        s = s[m.end():-1].strip()
    return s


def _repeating_to_fraction(m):
    """0.1\\overline{6} -> \\frac{1}{6}: x = int.fixed(rep)(rep)... is exact rational."""
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    value = (int(whole) + Fraction(int(fixed or "0"), 10 ** len(fixed))
             + Fraction(int(rep), 10 ** len(fixed) * (10 ** len(rep) - 1)))
    return str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _normalize_latex(s):
    """LaTeX-only rewrites: one spelling per macro, no degrees, text macros, spacing."""
    for old, new in _MACRO_ALIASES:
        s = s.replace(old, new)
    s = _FUNC_NAME.sub(r"\\\1", s)  # \operatorname{sin} is \sin, not the letters s i n
    s = _CHOOSE.sub(r"\\binom{\1}{\2}", s)
    s = _DEGREES.sub("", s)
    s = _unwrap_text_macros(s)
    s = _SPACING.sub(" ", s)
    return s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")


def _normalize_numbers(s):
    """Number spellings on the space-free string: \\frac12, \\sqrt2, repeating decimals,
    base subscripts, scientific notation, thousands separators."""
    if "\\" in s:  # \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}
        s = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_DIGIT_BRACE.sub(r"\\frac{\1}{", s)
        s = _FRAC_BRACE_DIGIT.sub(r"\\frac{\1}{\2}", s)
        s = _SQRT_DIGIT.sub(r"\\sqrt{\1}", s)
        s = _REPEATING.sub(_repeating_to_fraction, s)
    if "_" in s:  # 2516_{8} -> 2516: the question names the base, the digits are the answer
        s = _BASE_SUBSCRIPT.sub(r"\1", s)
    if m := _SCIENTIFIC.fullmatch(s):  # 3.2\times10^{5} -> 3.2e5, parsed exactly below
        s = f"{m.group(1)}e{m.group(2)}"
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _inequality_to_interval(s):
    """x\\leq3 -> (-\\infty,3], 1<x\\leq3 -> (1,3]: one variable's range as MATH writes it."""
    if (m := _INEQ_TWO.fullmatch(s)) and not re.search(r"\\[lg]e", m.group(1) + m.group(5)):
        lo, op1, _, op2, hi = m.groups()
        return ("(" if op1 == "<" else "[") + f"{lo},{hi}" + (")" if op2 == "<" else "]")
    if (m := _INEQ_ONE.fullmatch(s)) and not re.search(r"\\[lg]e", m.group(3)):
        _, op, bound = m.groups()
        if op in ("<", ">"):
            return f"(-\\infty,{bound})" if op == "<" else f"({bound},\\infty)"
        return f"(-\\infty,{bound}]" if op.startswith("\\le") else f"[{bound},\\infty)"
    return s


def normalize_answer(s):
    """Canonical string form of an answer (see the module docstring)."""
    s = str(s).strip()
    if _PLAIN_NUMBER.fullmatch(s):  # the common case: nothing to normalize
        return s
    s = s.replace("\\$", "").replace("$", "").strip()
    if "\\" in s:  # LaTeX only
        s = _normalize_latex(_unwrap_boxes(s))
    s = s.replace("°", "").replace("{,}", ",").replace("~", " ")
    s = " ".join(s.split()).rstrip(".").strip()
    if m := _UNIT_WORDS.match(s):
        s = m.group(1)
    s = _ASSIGN.sub("", s)
    if m := _MIXED_SLASH.fullmatch(s):  # "2 1/2" is a mixed number
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    s = _COMMAND_SPACE_LETTER.sub(r"\1{\2}", s)  # \ln x -> \ln{x}, not the command \lnx
    s = s.replace(" ", "")
    while len(s) >= 2 and s[0] == "{" and _match_brace(s, 0) == len(s):
        s = s[1:-1]
    if m := _CHOICE.fullmatch(s):  # multiple choice "(c)" -> "C"
        s = m.group(1).upper()
    if "<" in s or ">" in s or "\\le" in s or "\\ge" in s:
        s = _inequality_to_interval(s)
    return _normalize_numbers(s)

# -----------------------------------------------------------------------------
# fast numeric path (no sympy)

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_PLAIN = re.compile(rf"({_NUM}(?:[eE][-+]?\d{{1,3}})?)")  # 1.5e-3: at most 3 exponent digits
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
    "frac", "sqrt", "binom", "pi", "infty", "cdot", "times", "div", "pm", "cup", "begin", "end",
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

_TOKEN = re.compile(r"((?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3}(?!\d))?)|(\\[a-zA-Z]+)|([a-zA-Z])"
                    r"|(\*\*|[-+*/^!(){}\[\]|_])")
_GREEK = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma",
          "tau", "rho", "epsilon", "varepsilon", "varphi"}
_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp"}
_INVERSE = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}  # \sin^{-1} x is arcsin x
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


def _safe_binomial(n, k):
    """binomial(n, k), refusing values too large to compute quickly (\\binom{10^6}{5 \\cdot 10^5})."""
    import sympy as sp
    if n.is_Integer and k.is_Integer:
        if n < 0:
            raise ParseError("binomial of a negative integer")
        if min(k, n - k) * max(1, int(n).bit_length()) > MAX_POW_BITS:
            raise ParseError("binomial too large")
    return sp.binomial(n, k)


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
                 | \\frac arg arg | \\binom arg arg | \\sqrt([expr])? arg
                 | \\func ('^' arg)? arg | \\log '_' arg arg
        number  := digits, decimals, e-notation (1.5e-3); the letters e and i are Euler's
                   number and the imaginary unit (see the module docstring)
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
            return sp.Rational(tok) if ("." in tok or "e" in tok.lower()) else sp.Integer(tok)
        if tok == "e":
            return sp.E
        if tok == "i":
            return sp.I
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
        if name == "binom":
            n = self.arg()
            return _safe_binomial(n, self.arg())
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
            return self.function(name)
        raise ParseError(f"unsupported token {tok!r}")


    def function(self, name):
        """\\sin x, \\sin(x), \\sin^2 x (a power of the value), \\sin^{-1} x (arcsin),
        \\log_{b} x and \\log_b(x) (base b; \\log and \\ln alone are natural)."""
        sp = self.sp
        power = base = None
        if self.peek() == "^":
            self.take()
            power = self.arg()
            if power == -1 and name in _INVERSE:
                name, power = _INVERSE[name], None
        if name == "log" and self.peek() == "_":
            self.take()
            base = self.arg()
        x = self.primary() if self.peek() in ("(", "{") else self.power()
        fn = {"ln": sp.log, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan}.get(name)
        value = (fn or getattr(sp, name))(x)
        if base is not None:
            if base.is_number and (base <= 0 or base == 1):
                raise ParseError("bad logarithm base")
            value = sp.log(x, base)
        return value if power is None else _safe_pow(value, power)


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
    if {ka, kb} <= {"set", "list"}:  # \{1, 2\} and "1, 2" are both unordered collections
        return _items_equal(ia, ib, False, cache)
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

_symbolic_cache = {}      # (pred_norm, gold_norm) -> bool, timeouts included
_SYMBOLIC_CACHE_SIZE = 20000
_workers = {}             # thread ident -> _Worker: this process's workers, one per thread
_workers_lock = threading.Lock()


def _read_line(fd, deadline):
    """One line from fd, or None if it does not arrive before `deadline` (time.monotonic)
    or the other end closed. select() so that a silent worker cannot block us."""
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.decode("ascii", "replace").strip()


class _Worker:
    """One sympy worker: a separate interpreter running `command`, spoken to in JSON lines.
    Started with subprocess, not multiprocessing, so a daemonic process may start it."""

    def __init__(self, command):
        if not command or not command[0]:
            raise RuntimeError("grading.py: no Python executable to start the sympy worker with")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        ready = _read_line(self.proc.stdout.fileno(), time.monotonic() + WORKER_START_TIMEOUT)
        if ready != "ready":
            self.kill()
            raise RuntimeError(f"grading.py: the sympy worker {command} did not start (said {ready!r})")

    def alive(self):
        return self.proc.poll() is None

    def ask(self, pred_norm, gold_norm, timeout):
        """True / False, or None when it did not answer in time (or died)."""
        try:
            self.proc.stdin.write((json.dumps([pred_norm, gold_norm]) + "\n").encode("ascii"))
        except OSError:  # BrokenPipeError: it died
            return None
        reply = _read_line(self.proc.stdout.fileno(), time.monotonic() + timeout)
        return {"1": True, "0": False}.get(reply)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.forget()

    def forget(self):
        """Close our ends of the pipes without touching the process (a fork's inherited copy)."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _thread_worker(command):
    """This thread's live worker, started when missing; workers of finished threads are
    killed on the way (thread idents are reused, so a dead thread's worker is found)."""
    ident = threading.get_ident()
    with _workers_lock:
        worker = _workers.get(ident)
        if worker is not None and worker.alive():
            return worker
        alive = {t.ident for t in threading.enumerate()}
        for k in [k for k in _workers if k == ident or k not in alive]:
            _workers.pop(k).kill()
    worker = _Worker(command)  # outside the lock: starting takes ~1 s, other threads go on
    with _workers_lock:
        _workers[ident] = worker
    return worker


def stop_workers():
    """Kill this process's sympy workers (the next symbolic check starts a fresh one)."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.kill()


def _forget_inherited_workers():
    """After fork, in the child: the parent's workers are the parent's. Drop them (closing
    only our copies of their pipes) and take a fresh lock, which another thread of the
    parent may have held at the moment of the fork."""
    global _workers_lock
    _workers_lock = threading.Lock()
    for worker in _workers.values():
        worker.forget()
    _workers.clear()


os.register_at_fork(after_in_child=_forget_inherited_workers)
atexit.register(stop_workers)


def _symbolic_equiv_bounded(pred_norm, gold_norm, timeout, command=None):
    key = (pred_norm, gold_norm)
    if key in _symbolic_cache:
        return _symbolic_cache[key]
    worker = _thread_worker(command or WORKER_COMMAND)
    ok = worker.ask(pred_norm, gold_norm, timeout)
    if ok is None:  # too slow or crashed: kill it, the next call starts a fresh one
        with _workers_lock:
            if _workers.get(threading.get_ident()) is worker:
                del _workers[threading.get_ident()]
        worker.kill()
        ok = False
    if len(_symbolic_cache) >= _SYMBOLIC_CACHE_SIZE:
        _symbolic_cache.clear()
    _symbolic_cache[key] = ok
    return ok


def _watch_parent(parent_pid):
    """In the worker: exit as soon as the parent is gone, even in the middle of a check."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def _worker_main(stdin, stdout):
    """The worker's loop: one JSON [pred, gold] per line in, '1' or '0' per line out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it kills us
    import sympy  # noqa: F401  the one slow import, before "ready"
    _watch_parent(os.getppid())
    stdout.write("ready\n")
    stdout.flush()
    for line in stdin:
        try:
            pred, gold = json.loads(line)
            ok = bool(symbolic_equiv(pred, gold))
        except Exception:  # model text: any failure means "not shown equal"
            ok = False
        stdout.write("1\n" if ok else "0\n")
        stdout.flush()

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


def main(argv):
    if argv == ["--worker"]:
        _worker_main(sys.stdin, sys.stdout)
    elif len(argv) == 2:
        print(is_equiv(argv[0], argv[1]))
    else:
        print(__doc__.split("\n\n")[1])
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
