"""
Grading for Extra-CoT: answer extraction, normalization and a safe, time-bounded answer
equivalence that works in any process (forked, spawned, daemonic pool workers, threads).

    from grading import extract_answer, is_equiv
    pred = extract_answer(response_text)          # last balanced \\boxed{..}, or None
    ok = is_equiv(pred, gold)                     # never evals model text, time-bounded

    python grading.py '\\frac{1}{2}' 0.5          # one verdict from the command line

Benchmark: `python bench_equiv.py`. Tests: `python -m pytest tests/test_grading.py`.
Grading is three files: this one (what callers use), grading_symbolic.py (the whitelisted
parser to sympy and the structure-aware comparison) and grading_worker.py (the sympy
worker subprocess that bounds its time).

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
   (so 0.3333333 == 1/3, 0.33 != 1/3): grading_symbolic.numbers_close.
2. Symbolic path (grading_symbolic.py): a recursive-descent parser for a whitelisted
   LaTeX / plain-math grammar builds sympy objects, then tuples, intervals, sets and
   unordered lists, unions, \\pm, matrices and equations are compared element-wise, each
   expression numerically at 50 digits. Model text is never passed to eval/sympify.
   `i` is the imaginary unit and `e` is Euler's number (MATH writes 3+4i).

Conventions, chosen for MATH and AMC answers:
- A percent sign is dropped: 50\\% equals 50, as MATH's reference normalizer (strip_string,
  which deletes "\\%") has it; a percent also equals its fraction (50\\% == 0.5), since both
  spellings answer a "what percent" question.

Safety and time. Cheap guards run first, in the calling process: length <=
MAX_SYMBOLIC_CHARS, bracket depth <= MAX_NESTING, no huge exponent/factorial literals, only
whitelisted LaTeX commands. The parser also refuses values too large to compute quickly
(grading_symbolic.py). What passes runs in a sympy worker (grading_worker.py): a separate
interpreter per calling thread, killed when it does not answer within `timeout` seconds,
and then the answer counts as not equal. Verdicts are cached per normalized pair.
"""

import re
import sys
from fractions import Fraction

from grading_symbolic import numbers_close
from grading_worker import stop_workers, symbolic_equiv_bounded  # noqa: F401  stop_workers: part of this API

# -----------------------------------------------------------------------------
# constants

MAX_ANSWER_CHARS = 2000      # longer answers only get a raw string comparison
MAX_SYMBOLIC_CHARS = 500     # longer answers never reach sympy
MAX_NESTING = 20             # bracket depth above this never reaches sympy

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


def _numbers_equiv(pa, pb):
    (a, a_pct), (b, b_pct) = pa, pb
    if numbers_close(a, b):
        return True
    if a_pct and not b_pct:
        return numbers_close(a / 100, b)
    if b_pct and not a_pct:
        return numbers_close(a, b / 100)
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
    return symbolic_equiv_bounded(p, g, timeout)


def main(argv):
    if len(argv) == 2:
        print(is_equiv(argv[0], argv[1]))
    else:
        print(__doc__.split("\n\n")[1])
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
