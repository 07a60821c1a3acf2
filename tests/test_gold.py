import json

import numpy as np
import pytest

from overopt.gold import TinyGold, clumps_term, count_term, repeat_term, runs_term


def test_terms_on_hand_made_text():
    assert list(count_term(["a.b,c", "----", "abc"], ".,-")) == [2, 4, 0]
    assert list(runs_term(["ab---c", "aa", "====x***", "no runs"])) == [3, 0, 7, 0]
    assert list(repeat_term(["the the cat", "a cat", "is is is"])) == [1, 0, 1]
    # outside runs: "----" is a run, "a--b" is not (two symbols), ".---," keeps its "." and ","
    assert list(count_term(["a.b,c", "----", "a--b", ".---,"], ".,-", skip_runs=True)) == [2, 0, 2, 2]
    # adjacent symbol pairs outside runs: ").]" has 2, "a.b" none, "(---)" is "()" once the run goes
    assert list(clumps_term([").]", "a.b", "(---)", "x..y", "...."], ".()]")) == [2, 0, 1, 1, 0]


def _gold(spec):
    """A TinyGold on `spec`, its other settings at the config schema's defaults."""
    from overopt.config import schema_defaults

    g = TinyGold.__new__(TinyGold)
    spec = {**schema_defaults("gold", "tiny"), **spec}
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


def test_count_over_turns_the_cap_into_a_tent():
    spec = {"terms": {"count": 1.0}, "reward_chars": ".", "count_cap": 4, "count_over": 0.5,
            "fluency_cap": None, "stats": {"count": [0.0, 1.0]}}
    s = _gold(spec).score([""] * 7, ["." * c + "a" * (8 - c) for c in range(7)])
    # up to the cap each symbol adds 1; past it each takes back 0.5
    assert list(s) == pytest.approx([0, 1, 2, 3, 4, 3.5, 3])
    flat = _gold({**spec, "count_over": 0.0}).score([""] * 7, ["." * c for c in range(7)])
    assert list(flat) == pytest.approx([0, 1, 2, 3, 4, 4, 4])


def test_count_power_makes_the_count_concave_and_is_standardised_after():
    spec = {"terms": {"count": 1.0}, "reward_chars": ".", "count_power": 0.5, "count_skip_runs": True,
            "fluency_cap": None, "stats": {"count": [1.0, 2.0]}}
    g = _gold(spec)
    assert list(g.terms([""] * 3, ["a", "a." * 4, "a." * 9])["count"]) == pytest.approx([0, 2, 3])
    # z of the transformed count: (sqrt(c) - 1) / 2; the run "...." counts nothing
    assert list(g.score([""] * 3, ["a." * 4, "a." * 9, "...."])) == pytest.approx([0.5, 1.0, -0.5])


def test_char_ngram_is_a_normalised_witten_bell_model(tmp_path):
    from overopt.gold import CharNGram

    text = "the cat sat on the mat. the cat ran. a dog sat."
    lm = CharNGram.fit(text, 4)
    lm.save(tmp_path / "ngram.npz")
    lm = CharNGram.load(tmp_path / "ngram.npz")
    # every context (seen, unseen, at the start, with an unknown character) gives a distribution
    for context in ["the c", "zzq", "", "at#"]:
        probs = [np.exp(lm.logprobs(lm.encode(context + ch))[-1]) for ch in lm.alphabet + "\x01"]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9), context
    # by hand, order 2 on "abab": P(b|a) = (C(ab) + U(a) P1(b)) / (N(a) + U(a)), P1(b) = (2+1)/(4+3)
    two = CharNGram.fit("abab", 2)
    assert np.exp(two.logprobs(two.encode("ab"))[-1]) == pytest.approx((2 + 1 * 3 / 7) / (2 + 1))
    # corpus-like text is more likely per character than the same characters shuffled
    good, bad = lm.mean_logprob(["the "] * 2, ["cat sat", "tsc ata"])
    assert good > bad + 1.0


def test_char_ngram_batch_scoring_equals_one_text_at_a_time():
    from overopt.gold import CharNGram

    lm = CharNGram.fit("the cat sat on the mat. the cat ran. a dog sat.", 5)
    prompts, comps = ["the ", "", "a d", "x#y "], ["cat sat", "the", "", "zz\u00e9 mat"]
    one = [lm.logprobs(lm.encode(p + c))[len(p):].mean() if c else 0.0 for p, c in zip(prompts, comps)]
    assert lm.mean_logprob(prompts, comps) == pytest.approx(one)


@pytest.mark.parametrize("n_layer", [1, 2])
def test_fluency_reuses_each_prompt_and_equals_the_joined_forward_pass(n_layer, monkeypatch):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import overopt.models
    from overopt.text import build_char_tokenizer, corpus_split
    from overopt.models import completion_logprobs, completion_logprobs_joined

    calls = []
    direct = overopt.models.gpt2_logprobs_with_prefix
    monkeypatch.setattr(overopt.models, "gpt2_logprobs_with_prefix", lambda *a: calls.append(1) or direct(*a))

    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=n_layer, n_head=2,
                                       pad_token_id=tok.pad_token_id)).eval()
    rng = np.random.default_rng(0)
    # 40 completions per prompt: a pool, so each prompt runs once (the empty one on joined text)
    prompts = [p for p in ("The quick brown ", "def f(x): ", "Note: ") for _ in range(40)] + ["", "x"]
    # completions of different lengths (the batches carry right padding), one empty
    comps = ["".join(rng.choice(list("abcdefgh ,."), rng.integers(1, 12))) for _ in prompts[:-2]] + ["abc", ""]
    want = completion_logprobs_joined(model, tok, prompts, comps, batch_size=4)
    got = completion_logprobs(model, tok, prompts, comps, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(want) > 0.05
    assert len(calls) == 3 * 40 // 4  # batches of 2 x batch_size; "" and "x" + "" go joined


def test_ngram_gold_builds_loads_and_prefers_corpus_like_text(tmp_path):
    from overopt.text import corpus_split
    from overopt.gold import build_gold, load_gold

    train, held = corpus_split()
    spec = {"tiny": {"fluency_ngram": 4, "terms": {"fluency": 1.0}, "fluency_cap": None}}
    meta = build_gold(spec, str(tmp_path / "gold"), None, held, 16, 16, seed=0, train_text=train)
    assert (tmp_path / "gold" / "ngram.npz").exists() and not (tmp_path / "gold" / "reference").exists()
    mu, sd = meta["stats"]["fluency"]
    gold = load_gold(tmp_path / "gold")
    good, junk = gold.score(["The function returns "] * 2, ["the value of the ", "qzx]]vk'@#jw;;p!"])
    # held-out text standardises the term: corpus-like text near 0, junk far below
    assert abs(good) < 2 and junk < good - 2
    assert mu < 0 and sd > 0


def test_comparison_pairs_run_each_prompt_once_for_both_completions(monkeypatch):
    """Pairs (two completions per prompt, many prompts): the prompt-reusing path in passes of
    2 x batch_size completions, the same numbers as the joined texts."""
    import overopt.models
    from conftest import tiny_lm_and_rm
    from overopt.models import completion_logprobs, completion_logprobs_joined

    rows = []
    direct = overopt.models.gpt2_logprobs_with_prefix
    monkeypatch.setattr(overopt.models, "gpt2_logprobs_with_prefix", lambda m, p, ids, o: rows.append(len(ids)) or direct(m, p, ids, o))
    tok, lm, _ = tiny_lm_and_rm(32, n_head=2)
    rng = np.random.default_rng(1)
    # 30 prompts of three lengths, each with a pair of completions of different lengths
    prompts = ["".join(rng.choice(list("abcde "), 4 + i % 3)) for i in range(30)]
    a, b = ([("".join(rng.choice(list("abcdefgh ,."), rng.integers(1, 12)))) for _ in prompts] for _ in range(2))
    want = completion_logprobs_joined(lm, tok, prompts + prompts, a + b, batch_size=4)
    got = completion_logprobs(lm, tok, prompts + prompts, a + b, batch_size=4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.ptp(want) > 0.05
    assert sum(rows) == 60 and max(rows) == 8 and len(rows) == 9  # each length's 20 completions in 8 + 8 + 4
    lm_calls = []
    monkeypatch.setattr(overopt.models, "gpt2_logprobs_with_prefix", lambda *x: lm_calls.append(1) or direct(*x))
    completion_logprobs(lm, tok, prompts, a, batch_size=4)  # one completion per prompt: joined texts
    assert not lm_calls
