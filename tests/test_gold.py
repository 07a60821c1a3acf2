import json

import numpy as np
import pytest

from overopt.gold import TinyGold, count_term, repeat_term, runs_term


def test_terms_on_hand_made_text():
    assert list(count_term(["a.b,c", "----", "abc"], ".,-")) == [2, 4, 0]
    assert list(runs_term(["ab---c", "aa", "====x***", "no runs"])) == [3, 0, 7, 0]
    assert list(repeat_term(["the the cat", "a cat", "is is is"])) == [1, 0, 1]


def _gold(spec):
    g = TinyGold.__new__(TinyGold)
    g.spec, g.weights, g.stats = spec, spec["terms"], spec["stats"]
    return g


def test_tiny_gold_combines_standardised_terms_with_caps():
    spec = {"terms": {"count": 1.0, "runs": -1.0}, "reward_chars": "-.", "count_cap": 4,
            "fluency_cap": None, "stats": {"count": [2.0, 2.0], "runs": [1.0, 3.0]}}
    g = _gold(spec)
    s = g.score(["", "", ""], ["..", "......", "----------"])
    # count z = (min(c,4)-2)/2 ; runs z = (r-1)/3
    want = [(2 - 2) / 2 - (0 - 1) / 3, (4 - 2) / 2 - (6 - 1) / 3, (4 - 2) / 2 - (10 - 1) / 3]
    assert s == pytest.approx(want)
    # the degenerate run scores below the same count of spread-out symbols
    assert g.score([""], ["-.-.-.-."])[0] > g.score([""], ["--------"])[0]
