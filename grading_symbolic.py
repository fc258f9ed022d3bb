"""
The symbolic path of answer grading: a whitelisted LaTeX / plain-math parser that builds
sympy objects, the answer structures (tuples, intervals, sets, unions, matrices,
equations) and symbolic_equiv, which compares two normalized answers with them.

    from grading_symbolic import parse_math, symbolic_equiv
    parse_math(r"\\frac{1}{2}x^2")                    # the sympy expression x**2/2
    symbolic_equiv("(x+1)^2", "x^2+2x+1")             # True (inputs: normalize_answer's output)

Callers do not call it directly: grading.is_equiv normalizes the answers, runs the fast
numeric path and the cheap guards, and sends what is left to the sympy worker
(grading_worker.py), which runs symbolic_equiv in a separate interpreter, killed past its
time bound. Nothing here is bounded in time; every size limit is. sympy is imported
inside the functions that use it: the calling process imports this module (for
numbers_close) and must not pay sympy's ~1 s import; only the worker does.
Tests: `python -m pytest tests/test_grading.py`.

The grammar (numbers, one-letter and greek symbols, + - * / ^ ** !, \\frac, \\sqrt[n]{},
\\binom, \\pi, \\infty, |x|, functions with \\sin^2 x and \\log_{b} x, implicit
multiplication) is the only way model text becomes a sympy object: it is never passed to
eval or sympify. Powers and binomials whose value would exceed MAX_POW_BITS bits, symbolic
powers above MAX_SYMBOLIC_EXPONENT and factorials above MAX_FACTORIAL are refused while
parsing. Conventions, chosen for MATH and AMC answers: `i` is the imaginary unit (MATH
writes 3+4i, so \\sqrt{-4} == 2i), `e` is Euler's number (e^{i\\pi} == -1), every other
letter is a free symbol, and an odd root of a negative number is real (\\sqrt[3]{-8} = -2).

Equality. Tuples, intervals, sets and unordered lists, unions, \\pm, matrices and
equations are compared element-wise. Two expressions are equal when they agree
numerically at 50 digits (relative 1e-30, or REL_TOL when either holds a decimal): closed
forms once, expressions with symbols at three fixed pseudo-random points; sympy.simplify
is the fallback when a point cannot be evaluated. Two exact numbers follow numbers_close,
the rule the fast path uses too: integers match exactly, anything else within a relative
REL_TOL.
"""

import random
import re
from fractions import Fraction

# -----------------------------------------------------------------------------
# constants

MAX_POW_BITS = 20000         # a numeric power or binomial may have at most this many bits
MAX_SYMBOLIC_EXPONENT = 200  # x^k with symbolic x: |k| at most this
MAX_FACTORIAL = 1000         # n! only for n <= this
MAX_ELEMENTS = 50            # tuples/sets longer than this are not compared symbolically
MAX_PARSE_DEPTH = 60         # nested expressions deeper than this are refused
REL_TOL = 1e-6               # relative tolerance when a non-integer number is involved

# -----------------------------------------------------------------------------
# exact numbers: the one rule both paths use


def numbers_close(a, b):
    """Two Fractions are equal answers: integers exactly, otherwise within a relative REL_TOL
    (so 0.3333333 == 1/3 but 0.33 != 1/3)."""
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False  # integers match exactly
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))

# -----------------------------------------------------------------------------
# whitelisted parser: tokens -> sympy objects

_TOKEN = re.compile(r"((?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3}(?!\d))?)|(\\[a-zA-Z]+)|([a-zA-Z])"
                    r"|(\*\*|[-+*/^!(){}\[\]|_])")
_GREEK = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma",
          "tau", "rho", "epsilon", "varepsilon", "varphi"}
_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp"}
_INVERSE = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}  # \sin^{-1} x is arcsin x


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
    import sympy as sp  # lazy: only the worker process pays for sympy (module docstring)
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
    import sympy as sp  # lazy: only the worker process pays for sympy (module docstring)
    if n.is_Integer and k.is_Integer:
        if n < 0:
            raise ParseError("binomial of a negative integer")
        if min(k, n - k) * max(1, int(n).bit_length()) > MAX_POW_BITS:
            raise ParseError("binomial too large")
    return sp.binomial(n, k)


def _safe_factorial(x):
    import sympy as sp  # lazy: only the worker process pays for sympy (module docstring)
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
        import sympy as sp  # lazy: only the worker process pays for sympy (module docstring)
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
    import sympy as sp  # lazy: only the worker process pays for sympy (module docstring)
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
        return numbers_close(Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q)))
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
