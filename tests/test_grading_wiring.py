"""Answer grading edge cases that a one-line slip would break: the sign of negative mixed
numbers, and the strict (1e-30) tolerance of the symbolic path for exact closed forms.
Grading lives in grading.py (fast path) and grading_symbolic.py (symbolic path).

    python -m pytest tests/test_grading_wiring.py -q
"""
from fractions import Fraction

import pytest

from grading import is_equiv, normalize_answer, parse_number


@pytest.mark.parametrize('text', ['-2 1/2', r'-2\frac{1}{2}', r'-2\frac12'])
def test_negative_mixed_number_keeps_its_sign(text):
    assert parse_number(normalize_answer(text)) == (Fraction(-5, 2), False)
    assert is_equiv(text, '-5/2') and is_equiv(text, '-2.5')
    assert not is_equiv(text, '-3/2') and not is_equiv(text, '5/2')


def test_positive_mixed_number_is_a_sum():
    assert parse_number(normalize_answer('3 1/4')) == (Fraction(13, 4), False)
    assert parse_number(normalize_answer(r'+3\frac{1}{4}')) == (Fraction(13, 4), False)


@pytest.mark.parametrize('pred, gold', [
    (r'\frac{99}{70}', r'\sqrt{2}'),       # relative difference 5e-5
    (r'\frac{355}{113}', r'\pi'),          # relative difference 8.5e-8
    (r'\sqrt{2}+\frac{1}{10^{12}}', r'\sqrt{2}'),
    (r'x^2+\frac{x}{10^{9}}', r'x^2'),     # with a symbol: evaluated at sample points
])
def test_exact_closed_forms_that_are_only_close_are_not_equal(pred, gold):
    assert not is_equiv(pred, gold)


@pytest.mark.parametrize('pred, gold', [('1.414', r'\sqrt{2}'), ('3.1416', r'\pi'), ('0.33', r'\frac{1}{3}')])
def test_short_decimal_is_not_an_exact_closed_form(pred, gold):
    assert not is_equiv(pred, gold)


@pytest.mark.parametrize('pred, gold', [('1.41421356237', r'\sqrt{2}'), (r'2\sqrt{2}', r'\sqrt{8}'),
                                        (r'\frac{\pi}{2}', r'\frac{2\pi}{4}')])
def test_equal_closed_forms_and_precise_decimals_are_equal(pred, gold):
    assert is_equiv(pred, gold)
