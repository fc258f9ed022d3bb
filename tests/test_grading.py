"""
Tests for grading.py, grading_symbolic.py and grading_worker.py: answer extraction,
equivalence (fast and symbolic paths, the answer forms of MATH and AMC, adversarial
inputs), and that is_equiv works, time-bounded, in any process: forked children, spawned
and forked (daemonic) pool workers, and threads.

    python -m pytest tests/test_grading.py -q
"""

import math
import multiprocessing as mp
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction

import pytest

import grading_worker
from grading import extract_answer, find_boxed, is_equiv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a stand-in worker that starts but never answers: what a check that hangs looks like
SILENT_WORKER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]

# -----------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize("text, expected", [
    (r"so the result is \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"nested \boxed{\{1, \boxed{2}\}} end", r"\{1, \boxed{2}\}"),
    (r"first \boxed{3} then corrected \boxed{4}", "4"),
    (r"\fbox{7}", "7"),
    (r"last \boxed{3} then a truncated \boxed{4", "3"),
    (r"we get \boxed 5.", "5"),
    ("The answer is: 17.", "17"),
    ("blah. The answer is $\\frac{3}{4}$.\n", r"\frac{3}{4}"),
    ("The final answer is 12", "12"),
    ("work\n#### 1,234", "1,234"),
    (r"#### 5 and The answer is 6 but \boxed{7}", "7"),  # a box wins over text forms
    ("no answer here", None),
    ("", None),
    (None, None),
    (r"\boxed{", None),
])
def test_extract_answer_takes_last_balanced_box_or_text_form(text, expected):
    assert extract_answer(text) == expected


def test_find_boxed_counts_top_level_boxes_only():
    assert find_boxed(r"\boxed{1} and \boxed{\boxed{2}+1}") == ["1", r"\boxed{2}+1"]
    assert find_boxed(r"no boxes") == []
    assert find_boxed(r"\boxed{a}\fbox{b} \boxed c") == ["a", "b", "c"]

# -----------------------------------------------------------------------------
# equivalence: GSM8K and MATH styles

EQUIV_CASES = [
    # GSM8K: integers, separators, currency, units, decimals
    ("18", "18", True),
    ("18", "19", False),
    ("1,234", "1234", True),
    ("1{,}234", "1234", True),
    ("1,234,567", "1234567", True),
    (r"\$18", "18", True),
    (r"\$18.00", "18", True),
    ("18.0", "18", True),
    ("-5", "-5.0", True),
    ("-5", "5", False),
    ("0.5", ".5", True),
    ("12 dollars", "12", True),
    (r"12 \text{ cm}", "12", True),
    (r"12\text{cm}^2", "12", True),
    (r"\text{12}", "12", True),
    ("1000000", "1000001", False),
    ("x = 7", "7", True),
    ("7.", "7", True),
    ("7", "7.5", False),
    (r"\$1,000.50", "1000.5", True),
    # fractions, mixed numbers, percents
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", "0.75", True),
    (r"\tfrac{3}{4}", r"\frac34", True),
    (r"\frac12", "1/2", True),
    ("2/4", r"\frac{1}{2}", True),
    (r"-\frac{1}{3}", r"\frac{-1}{3}", True),
    (r"\frac{1}{3}", "0.3333333", True),
    (r"\frac{1}{3}", "0.33", False),
    (r"2\frac{1}{2}", "2.5", True),
    ("2 1/2", r"\frac{5}{2}", True),
    (r"2\frac{1}{2}", "1", False),
    (r"50\%", "50", True),
    (r"50\%", "0.5", True),
    ("25%", "0.3", False),
    # degrees, \left \right, spacing, wrappers
    (r"30^\circ", "30", True),
    (r"30^{\circ}", "30", True),
    (r"\left( 1, 2 \right)", "(1,2)", True),
    (r"{5}", "5", True),
    (r"\text{(C)}", "C", True),
    (r"\textbf{Monday}", "monday", True),
    ("Monday", "Tuesday", False),
    # symbolic: roots, pi, algebra
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"3\sqrt{2}", r"\sqrt{18}", True),
    (r"\sqrt{8}", r"2\sqrt{3}", False),
    (r"\sqrt[3]{27}", "3", True),
    (r"\sqrt[3]{-8}", "-2", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\frac{\pi}{4}", r"\frac\pi4", True),
    (r"\frac{\pi}{3}", r"\frac{\pi}{4}", False),
    ("(x+1)^2", "x^2+2x+1", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2+1", "(x+1)^2", False),
    (r"\frac{x^2-4}{x-2}", "x+2", True),
    ("2a+3b", "3b+2a", True),
    ("y = 2x + 3", "2x+3", True),
    (r"\sqrt{2}", "1.41421356", True),
    ("2^{10}", "1024", True),
    ("5!", "120", True),
    ("3+4i", "4i+3", True),
    # tuples, intervals, sets, unions, lists, matrices
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    (r"(\frac{1}{2}, 3)", "(0.5, 3)", True),
    ("[1,3)", "[1, 3)", True),
    ("[1,3)", "(1,3]", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"(-\infty, 3)", r"(-\infty, 3]", False),
    (r"\{1,2,3\}", r"\{3,2,1\}", True),
    (r"\{1,2\}", r"\{1,2,3\}", False),
    (r"(-\infty,1)\cup(2,\infty)", r"(2,\infty)\cup(-\infty,1)", True),
    ("1, -2", "-2, 1", True),
    (r"1\pm\sqrt{2}", r"1+\sqrt{2}, 1-\sqrt{2}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\\frac{4}{2}\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}", False),
    # non-answers
    ("", "5", False),
    (None, "5", False),
    ("banana", "5", False),
]


@pytest.mark.parametrize("pred, gold, expected", EQUIV_CASES)
def test_is_equiv_matches_expected_verdict(pred, gold, expected):
    assert is_equiv(pred, gold) is expected


def test_is_equiv_is_symmetric_on_the_case_list():
    for pred, gold, expected in EQUIV_CASES:
        if pred is not None:
            assert is_equiv(gold, pred) is expected, (gold, pred)


def test_fast_path_agrees_with_fraction_reference():
    # an independent reference: python's Fraction on a/b strings vs \frac and decimals
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randint(-50, 50), rng.randint(1, 20)
        c, d = rng.randint(-50, 50), rng.randint(1, 20)
        expected = Fraction(a, b) == Fraction(c, d)
        assert is_equiv(f"\\frac{{{a}}}{{{b}}}", f"{c}/{d}") is expected
        # the \frac{-a}{b} spelling of a negative fraction is parsed the same way
        assert is_equiv(f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}") is True

# -----------------------------------------------------------------------------
# adversarial inputs: bounded time, False

ADVERSARIAL = [
    "9^{9^{9^9}}",
    "10**10**10",
    "1000000!",
    "2^{10^{100}}",
    "x^{100000000}",
    "(x+1)^{1000000}",
    "((2^{100})^{100})^{100}",
    r"\frac{1}{0}",
    "1" * 100_000,
    "(" * 5000 + "1" + ")" * 5000,
    "{" * 3000 + "}" * 3000,
    "(" * 15 + "x" + ")" * 15 + "^" * 30,
    r"\sqrt{" * 200 + "2" + "}" * 200,
    r"\input{/etc/passwd}",
    "__import__('os').system('echo hi')",
    "lambda: 0",
    r"\begin{pmatrix}" + "&".join(["1"] * 400) + r"\end{pmatrix}",
    "x" * 499,
    "+".join(["x^{200}"] * 40),
    r"\binom{100000}{50000}",
    r"\binom{2^{20}}{2^{19}}",
    "1e999999999",
    r"\log_{1} 5",
    r"\log_{0} 5",
    "0.\\overline{" + "9" * 5000 + "}",
    r"\sin^{99999999} x",
    r"\boxed{" * 300 + "1" + "}" * 300,
    r"\sqrt{-1}^{10^{9}}",
]


@pytest.mark.parametrize("bad", ADVERSARIAL, ids=[f"adv{i}" for i in range(len(ADVERSARIAL))])
def test_adversarial_answer_returns_false_within_bound(bad):
    t0 = time.monotonic()
    assert is_equiv(bad, "42") is False
    assert time.monotonic() - t0 < 3.0

# -----------------------------------------------------------------------------
# answer forms of MATH-500 and AMC gold answers

MATH_FORM_CASES = [
    # scientific and e-notation
    (r"3.2\times 10^{5}", "320000", True),
    (r"3.2 \times 10^5", "3.2e5", True),
    ("1.5e-3", "0.0015", True),
    ("6.02E23", r"6.02\cdot 10^{23}", True),
    (r"2\times10^{-3}", "0.002", True),
    ("1.5e-3", "0.015", False),
    (r"3.2\times 10^{5}", "3.2e4", False),
    # logarithms with a base
    (r"\log_2 8", "3", True),
    (r"\log_{3}81", "4", True),
    (r"\log_{2}(x)", r"\frac{\ln x}{\ln 2}", True),
    (r"\log_{10} 1000", "3", True),
    (r"2\log_2 3", r"\log_2 9", True),
    (r"\log_2 8", "4", False),
    (r"\log_{3} 5", r"\log_{5} 3", False),
    # binomial coefficients
    (r"\binom{5}{2}", "10", True),
    (r"\dbinom{6}{3}", "20", True),
    (r"{5 \choose 2}", "10", True),
    (r"\binom{10}{3}", r"\binom{10}{7}", True),
    (r"\tbinom{n}{2}", r"\frac{n(n-1)}{2}", True),
    (r"\binom{10}{3}", "119", False),
    # repeating decimals
    (r"0.\overline{3}", r"\frac{1}{3}", True),
    (r"0.1\overline{6}", r"\frac16", True),
    (r"1.\overline{27}", r"\frac{14}{11}", True),
    (r"0.\overline{9}", "1", True),
    (r"0.\overline{12}", r"\frac{4}{33}", True),
    (r"0.\overline{3}", "0.333", False),
    (r"0.\overline{12}", r"0.1\overline{2}", False),
    # nested boxes
    (r"\boxed{5}", "5", True),
    (r"\boxed{\boxed{\frac12}}", "0.5", True),
    (r"\fbox{\boxed{(1,2)}}", "(1, 2)", True),
    (r"\boxed{5}", "6", False),
    # complex numbers (i is the imaginary unit) and Euler's number e
    (r"\sqrt{-4}", "2i", True),
    (r"1+\sqrt{-3}", r"1+i\sqrt{3}", True),
    (r"-1\pm\sqrt{-1}", "-1+i, -1-i", True),
    (r"e^{i\pi}", "-1", True),
    ("i^2", "-1", True),
    (r"\frac{1}{i}", "-i", True),
    ("(1+i)(1-i)", "2", True),
    (r"\ln(e^3)", "3", True),
    ("3+4i", "3-4i", False),
    (r"\sqrt{-4}", "2", False),
    ("e^2", "7.389", False),
    # base subscripts, unordered lists, operator names, other MATH spellings
    ("2516_8", "2516_{8}", True),
    ("2516_8", "2516", True),
    ("2516_8", "2517_8", False),
    (r"\{1,2\}", "1, 2", True),
    (r"\{1,2\}", "1, 3", False),
    (r"\cfrac{1}{2}", "1/2", True),
    (r"\operatorname{sin} x", r"\sin x", True),
    (r"\sin^2 x + \cos^2 x", "1", True),
    (r"\sin^{-1}(1)", r"\frac{\pi}{2}", True),
    (r"\left\lvert -3 \right\rvert", "3", True),
    ("f(x) = 2x+1", "2x+1", True),
    (r"\varnothing", r"\emptyset", True),
    ("(c)", r"\text{(C)}", True),
    (r"\pi r^2", r"r^2\pi", True),
    (r"\langle 1, -2 \rangle", "(1,-2)", True),
    (r"50\%", "50", True),  # MATH's convention: the percent sign is dropped
    # one variable's range: an inequality is its interval
    (r"x \le 3", r"(-\infty, 3]", True),
    (r"x > \frac{1}{2}", r"(\frac12, \infty)", True),
    (r"-2 \le x \le 7", "[-2,7]", True),
    (r"x < 3", r"(-\infty, 3]", False),
    (r"x \ge 2", r"(2, \infty)", False),
]


@pytest.mark.parametrize("pred, gold, expected", MATH_FORM_CASES)
def test_math_answer_forms(pred, gold, expected):
    assert is_equiv(pred, gold) is expected
    assert is_equiv(gold, pred) is expected


def test_repeating_decimals_agree_with_long_expansion():
    # independent reference: the decimal written out 40 periods long, then the closest
    # fraction with a denominator below 10^(digits after the point)
    rng = random.Random(1)
    for _ in range(100):
        whole = str(rng.randint(0, 99))
        fixed = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 3)))
        rep = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3)))
        ref = Fraction(f"{whole}.{fixed}{rep * 40}").limit_denominator(10 ** (len(fixed) + len(rep)))
        text = f"{whole}.{fixed}\\overline{{{rep}}}"
        assert is_equiv(text, f"{ref.numerator}/{ref.denominator}") is True, text
        off = ref + Fraction(1, 1000)  # off by far more than the relative tolerance
        assert is_equiv(text, f"{off.numerator}/{off.denominator}") is False, text


def test_binomials_and_logarithms_agree_with_math_module():
    rng = random.Random(2)
    for _ in range(25):
        n = rng.randint(0, 40)
        k = rng.randint(0, n)
        assert is_equiv(f"\\binom{{{n}}}{{{k}}}", str(math.comb(n, k))) is True
        assert is_equiv(f"\\binom{{{n}}}{{{k}}}", str(math.comb(n, k) + 1)) is False
        b, e = rng.randint(2, 9), rng.randint(0, 6)
        assert is_equiv(f"\\log_{{{b}}} {b ** e}", str(e)) is True
        assert is_equiv(f"\\log_{{{b}}} {b ** e}", str(e + 1)) is False


def test_e_notation_agrees_with_decimal_module():
    rng = random.Random(3)
    for _ in range(200):
        mantissa = f"{rng.randint(1, 9)}.{rng.randint(0, 999):03d}"
        exp = rng.randint(-12, 12)
        plain = format(Decimal(f"{mantissa}e{exp}"), "f")  # the reference spelling
        assert is_equiv(f"{mantissa}e{exp}", plain) is True
        assert is_equiv(f"{mantissa}\\times 10^{{{exp}}}", plain) is True
        assert is_equiv(f"{mantissa}e{exp + 1}", plain) is False

# -----------------------------------------------------------------------------
# the worker: time bound, and any process


def test_timed_out_worker_is_killed_and_replaced():
    # a worker that never answers: False within the bound, the worker is killed, and the
    # next call starts a fresh (real) one that answers correctly
    grading_worker.stop_workers()
    t0 = time.monotonic()
    assert grading_worker.symbolic_equiv_bounded("(x+1)^3", "x^3+3x^2+3x+1", timeout=0.3,
                                           command=SILENT_WORKER) is False
    assert time.monotonic() - t0 < 3.0
    assert threading.get_ident() not in grading_worker._workers
    grading_worker._symbolic_cache.clear()
    assert is_equiv("(x+1)^3", "x^3+3x^2+3x+1") is True
    assert grading_worker._workers[threading.get_ident()].alive()


def _silent_check(k):
    t0 = time.monotonic()
    ok = grading_worker.symbolic_equiv_bounded(f"x+{k}", f"{k}+x", timeout=1.5, command=SILENT_WORKER)
    return ok, time.monotonic() - t0


def test_threads_each_keep_the_time_bound():
    # one worker per thread: four hanging checks at once take about one timeout (1.5 s),
    # not four (6 s, had they queued for one worker)
    grading_worker.stop_workers()
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_silent_check, range(4)))
    assert all(ok is False for ok, _ in results)
    assert time.monotonic() - t0 < 4.5
    grading_worker.stop_workers()


# symbolic pairs no test above checks, so a forked child cannot answer from the inherited cache
def _fresh_pairs(tag):
    return [(f"(x+{tag})^2", f"x^2+{2 * tag}x+{tag * tag}", True),
            (f"\\sqrt{{{tag * tag * 2}}}", f"{tag}\\sqrt{{2}}", True),
            (f"(x+{tag})^2", f"x^2+{tag * tag}", False)]


def test_threads_get_correct_verdicts():
    pairs = [p for tag in range(11, 15) for p in _fresh_pairs(tag)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: is_equiv(p[0], p[1]), pairs))
    assert got == [expected for _, _, expected in pairs]


def _child_verdicts(pairs, queue):
    queue.put([is_equiv(p, g) for p, g, _ in pairs])


def test_forked_child_after_parent_started_its_worker():
    assert is_equiv("(y+1)^2", "y^2+2y+1") is True  # the parent's worker is running
    parent_worker = grading_worker._workers[threading.get_ident()]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    pairs = _fresh_pairs(21)
    child = ctx.Process(target=_child_verdicts, args=(pairs, queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0 and got == [e for _, _, e in pairs]
    # the child left the parent's worker alone: same process, still answering
    assert grading_worker._workers[threading.get_ident()] is parent_worker and parent_worker.alive()
    assert is_equiv("(y+2)^2", "y^2+4y+4") is True


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_daemonic_pool_workers(method):
    is_equiv("(z+1)^2", "z^2+2z+1")  # with a running worker in the parent, as in a trainer
    pairs = [p for tag in range(31, 35) for p in _fresh_pairs(tag + (10 if method == "spawn" else 0))]
    with mp.get_context(method).Pool(2) as pool:  # pool processes are daemonic
        got = pool.starmap(is_equiv, [(p, g) for p, g, _ in pairs])
    assert got == [e for _, _, e in pairs]


def _gone(pid):
    """True when pid has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_exits_when_its_parent_dies_without_cleanup():
    # a parent that dies hard (os._exit: no atexit, no kill) leaves no sympy worker behind
    code = ("import os, threading, grading, grading_worker\n"
            "grading.is_equiv('(x+1)^2', 'x^2+2x+1')\n"
            "print(grading_worker._workers[threading.get_ident()].proc.pid, flush=True)\n"
            "os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)
