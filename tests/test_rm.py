import numpy as np
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from overopt.data import build_char_tokenizer, corpus_split
from overopt.rm import rewards, rewards_by_prompt


import pytest


@pytest.mark.parametrize("path", ["direct", "generic"])
def test_rewards_by_prompt_equal_rewards_on_joined_texts(path, monkeypatch):
    # the tiny world's GPT-2 runs the written-out forward pass; every other model the HF cache path
    if path == "generic":
        monkeypatch.setattr("overopt.rm._direct_gpt2", lambda *a: False)
    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id)
    model = GPT2ForSequenceClassification(cfg)
    rng = np.random.default_rng(0)
    letters = list("abcdefgh ,.")
    prompts = [p for p in ("The quick brown ", "def f(x): ", "Note: ") for _ in range(7)]
    # completions of different lengths, so the batches carry right padding
    comps = ["".join(rng.choice(letters, rng.integers(3, 12))) for _ in prompts]
    order = rng.permutation(len(prompts))  # prompts interleaved, as after any shuffle
    prompts, comps = [prompts[i] for i in order], [comps[i] for i in order]
    want = rewards(model, tok, [p + c for p, c in zip(prompts, comps)])
    got = rewards_by_prompt(model, tok, prompts, comps, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(want) > 0  # the test would notice a constant
    # bf16 (`bon.score_dtype`): the body in bf16, the head in float32: close to float32 but
    # not equal to it (the bf16 path really ran), and the model itself left in float32
    low = rewards_by_prompt(model, tok, prompts, comps, batch_size=4, dtype=torch.bfloat16)
    err = np.abs(low - want)
    assert err.max() > 0 and err.max() < 0.05 * np.ptp(want)
    assert all(p.dtype == torch.float32 for p in model.parameters())
