"""
Benchmark of grading.is_equiv: checks per second on plain numbers (the common RL case),
on a mixed GSM8K/MATH-style list, and the worst-case time on adversarial answers.

    python bench_equiv.py            # print the figures
    python bench_equiv.py --append   # also append a section to BENCHMARKS.md

The symbolic path's result cache is cleared before each timed list, and the mixed list's
symbolic pairs are all distinct, so the figures are for first-time checks.
"""

import os
import platform
import random
import sys
import time

import grading_worker
from grading import is_equiv

SEED = 0                # the case lists are generated from this seed
N_PLAIN = 20000         # plain-number checks timed
N_MIXED = 4000          # mixed-list checks timed
SYMBOLIC_SHARE = 0.05   # fraction of the mixed list that needs sympy

# -----------------------------------------------------------------------------
# case lists


def plain_cases(rng, n):
    """GSM8K-like: integers and decimals, half equal (in another spelling), half not."""
    cases = []
    for _ in range(n):
        x = rng.randint(0, 10**6)
        if rng.random() < 0.5:
            gold = str(x)
            pred = rng.choice([str(x), f"{x:,}", f"{x}.0", f"\\${x}"])
        else:
            gold, pred = str(x), str(x + rng.randint(1, 9))
        cases.append((pred, gold))
    return cases


def mixed_cases(rng, n):
    """Plain numbers, LaTeX numbers (fractions, percents, units), and symbolic answers."""
    cases = []
    for k in range(n):
        u = rng.random()
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        if u < SYMBOLIC_SHARE:  # distinct symbolic pairs, a mix of true and false
            form = k % 4
            if form == 0:
                cases.append((f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"))
            elif form == 1:
                cases.append((f"(x+{a})^2", f"x^2+{2 * a}x+{a * a + (k % 2)}"))
            elif form == 2:
                cases.append((f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{\\pi}}{{{b}}}\\cdot {a}"))
            else:
                cases.append((f"({a}, \\frac{{1}}{{{b}}})", f"({a}, {1 / b:.10f})"))
        elif u < 0.3:  # LaTeX numbers on the fast path
            form = k % 4
            if form == 0:
                cases.append((f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}"))
            elif form == 1:
                cases.append((f"{a}\\%", f"{a / 100}"))
            elif form == 2:
                cases.append((f"{a}\\text{{ cm}}", str(a + (k % 2))))
            else:
                cases.append((f"\\dfrac{{{a}}}{{{b}}}", f"{a / b:.10f}"))
        else:
            cases.extend(plain_cases(rng, 1))
    return cases


ADVERSARIAL = [
    "9^{9^{9^9}}", "10**10**10", "1000000!", "2^{10^{100}}", "x^{100000000}",
    "((2^{100})^{100})^{100}", "1" * 100_000, "(" * 5000 + "1" + ")" * 5000,
    "\\sqrt{" * 200 + "2" + "}" * 200, "x" * 499, "+".join(["x^{200}"] * 40),
    "\\sin(" * 19 + "x" + ")" * 19, "(x+1)^{200}(x-1)^{200}", "2^{19999}\\cdot 3^{12000}",
    "\\begin{pmatrix}" + "&".join(["x^{100}"] * 40) + "\\end{pmatrix}",
    ", ".join(["(x+1)^{100}"] * 50),
]

# -----------------------------------------------------------------------------
# timing


def checks_per_second(cases):
    grading_worker._symbolic_cache.clear()
    t0 = time.perf_counter()
    for pred, gold in cases:
        is_equiv(pred, gold)
    return len(cases) / (time.perf_counter() - t0)


def worst_case(cases):
    grading_worker._symbolic_cache.clear()
    times = []
    for bad in cases:
        t0 = time.perf_counter()
        verdict = is_equiv(bad, "42")
        times.append(time.perf_counter() - t0)
        assert verdict is False, bad[:40]
    return max(times), sum(times) / len(times)


def main():
    rng = random.Random(SEED)
    is_equiv("(x+1)^2", "x^2+2x+1")  # start the worker outside the timed region
    plain = checks_per_second(plain_cases(rng, N_PLAIN))
    mixed = checks_per_second(mixed_cases(rng, N_MIXED))
    worst, mean = worst_case(ADVERSARIAL)
    lines = [
        f"plain numbers: {plain:,.0f} checks/s ({N_PLAIN} checks)",
        f"mixed list ({100 * SYMBOLIC_SHARE:.0f}% symbolic, first-time): {mixed:,.0f} checks/s ({N_MIXED} checks)",
        f"adversarial ({len(ADVERSARIAL)} answers): worst {worst * 1000:.0f} ms, mean {mean * 1000:.0f} ms (timeout 1 s)",
    ]
    print("\n".join(lines))
    if "--append" in sys.argv[1:]:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BENCHMARKS.md")
        with open(path, "a") as f:
            f.write(f"\n## is_equiv (grading.py) — `python bench_equiv.py`\n"
                    f"Machine: 2-core CPU, no GPU (python {platform.python_version()}).\n\n")
            f.write("".join(f"- {line}\n" for line in lines))
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
