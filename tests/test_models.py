import re
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_lm_and_rm
from overopt.text import build_char_tokenizer, corpus_split
from overopt.models import banned_token_ids, load_causal, load_tokenizer, pretrain, sample_texts

SPEC = {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64}


def _pretrain(tmp_path, name, tok_dir, steps=5):
    train, held = corpus_split()
    return pretrain(SPEC, train[:20000], held[:5000], str(tok_dir), str(tmp_path / name),
                    steps=steps, batch_size=4, seq_len=32, lr=3e-3, seed=0, threads=1)


def test_pretrain_is_deterministic_and_saved_as_hf_directory(tmp_path):
    train, held = corpus_split()
    build_char_tokenizer(train + held).save_pretrained(str(tmp_path / "tok"))
    m1 = _pretrain(tmp_path, "a", tmp_path / "tok")
    m2 = _pretrain(tmp_path, "b", tmp_path / "tok")
    w1, w2 = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert m1["val_loss_nats_per_char"] == m2["val_loss_nats_per_char"]
    model, tok = load_causal(tmp_path / "a"), load_tokenizer(tmp_path / "a")
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert model.config.bos_token_id == tok.bos_token_id and model.config.eos_token_id == tok.eos_token_id
    assert not list(tmp_path.glob(".*tmp*"))


def test_sampling_is_seeded_fixed_length_and_never_special(tmp_path):
    train, held = corpus_split()
    build_char_tokenizer(train + held).save_pretrained(str(tmp_path / "tok"))
    _pretrain(tmp_path, "a", tmp_path / "tok", steps=2)
    model, tok = load_causal(tmp_path / "a"), load_tokenizer(tmp_path / "a")
    prompts = ["The value of ", "x", "The value of ", "Return the"]
    a = sample_texts(model, tok, prompts, 12, batch_size=2, seed=3)
    b = sample_texts(model, tok, prompts, 12, batch_size=3, seed=3)
    assert all(len(c) == 12 for c in a)
    assert a == sample_texts(model, tok, prompts, 12, batch_size=2, seed=3)
    assert a != sample_texts(model, tok, prompts, 12, batch_size=2, seed=4)
    # on the ids: a special token would be dropped from the decoded text
    from overopt.models import sample
    from overopt.text import encode_texts

    banned = banned_token_ids(tok)
    x = torch.tensor(encode_texts(tok, ["The value of "] * 64))
    y = sample(model, x, 12, banned=banned, generator=torch.Generator().manual_seed(0))
    assert len(banned) >= 2 and not torch.isin(y, torch.tensor(banned)).any()


def test_direct_gpt2_decoder_matches_the_hf_forward_and_generic_loop(monkeypatch):
    """The fast decoder's logits at every step equal the HF model's full forward pass, and
    sampling through it draws the same completions as the generic cached loop."""
    import overopt.models as models
    from transformers import GPT2LMHeadModel

    train, held = corpus_split()
    tok = build_char_tokenizer(train + held)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(models.tiny_config({"n_layer": 2, "n_embd": 32, "n_head": 4}, tok)).eval()
    assert models.direct_gpt2(model)
    x, y = torch.randint(4, 97, (5, 9)), torch.randint(4, 97, (5, 6))
    dec = models._GPT2Decoder(model, 5, 9 + 6)
    steps = [dec(x)] + [dec(y[:, t : t + 1]) for t in range(6)]
    with torch.no_grad():
        full = model(input_ids=torch.cat([x, y], 1)).logits[:, 8:]
    for t, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)

    banned = banned_token_ids(tok)
    fast = models.sample(model, x, 20, banned=banned, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    slow = models.sample(model, x, 20, banned=banned, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("prompts,copies", [(1, 256), (8, 16), (24, 1)])
def test_repeated_prompts_run_once_and_sample_the_bits_of_the_full_batch(monkeypatch, prompts, copies):
    """A batch of repeated prompts (a pool's rows of one prompt, an evaluation's samples of each)
    runs each distinct prompt once in the sampler's prompt block, and draws the same tokens with
    the same log-probs and hidden states, bit for bit, as the whole batch through that block."""
    import overopt.models as models

    tok, model, _ = tiny_lm_and_rm(64)
    banned = banned_token_ids(tok)
    torch.manual_seed(1)
    distinct = torch.randint(4, 97, (prompts, 33))
    x = distinct.repeat_interleave(copies, 0)[torch.randperm(prompts * copies)]
    runs, min_tokens_default = [], models.PREFILL_MIN_TOKENS
    for min_tokens in (min_tokens_default, 10**9):  # 10**9: every row through the block
        monkeypatch.setattr(models, "PREFILL_MIN_TOKENS", min_tokens)
        calls = []
        monkeypatch.setattr(models, "_qkv", lambda blk, h, c, n, T, f=models._qkv: calls.append((n, T)) or f(blk, h, c, n, T))
        runs.append(models.sample(model, x, 16, banned=banned, generator=torch.Generator().manual_seed(3),
                                  return_scores=True))
        runs[-1] += (max(n for n, T in calls if T > 1),)
    (y, logp, h, rows), (y_full, logp_full, h_full, rows_full) = runs
    assert torch.equal(y, y_full) and torch.equal(logp, logp_full) and torch.equal(h, h_full)
    assert rows_full == prompts * copies
    assert rows == (prompts if copies == 1 else prompts * -(-min_tokens_default // (prompts * 33)))
    assert copies == 1 or len(set(map(tuple, y.tolist()))) > prompts  # copies still draw their own completions


@pytest.mark.parametrize("engine", ["direct", "hf"])
def test_sampler_scores_equal_a_second_pass_over_its_samples(monkeypatch, engine):
    """`sample(return_scores=True)` draws the same tokens as without, and its log-probabilities
    (banned tokens masked) and hidden states are those of a full pass over prompt + completion,
    the pass PPO made after every rollout: the same numbers to float rounding."""
    import overopt.models as models
    from overopt.ppo import masked_logprobs
    from transformers import GPT2LMHeadModel

    if engine == "hf":
        monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(models.tiny_config({"n_layer": 2, "n_embd": 32, "n_head": 4}, tok)).eval()
    banned = banned_token_ids(tok)
    x = torch.randint(4, 97, (6, 7))
    y = models.sample(model, x, 12, banned=banned, generator=torch.Generator().manual_seed(2))
    y2, logp, h = models.sample(model, x, 12, banned=banned, generator=torch.Generator().manual_seed(2),
                                return_scores=True)
    assert torch.equal(y, y2)
    with torch.no_grad():
        full_logp, full_h = masked_logprobs(model, torch.cat([x, y], 1), 7, banned, return_hidden=True)
    assert logp.shape == (6, 12) and h.shape == (6, 12, 32)
    torch.testing.assert_close(logp, full_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, full_h, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(logp).all() and logp.std() > 0.1  # real scores, not a constant


def test_direct_passes_equal_the_hf_forward_on_padded_batches_with_gradients(monkeypatch):
    """The direct full-sequence passes (training, scoring, log-probs) give the HF model's numbers on
    right-padded rows, for an LM and a reward model, and the same gradients; OVEROPT_ENGINE=hf
    switches them off."""
    import overopt.models as models
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    cfg = models.tiny_config({"n_layer": 2, "n_embd": 32, "n_head": 4}, tok)
    lm, rm = GPT2LMHeadModel(cfg), GPT2ForSequenceClassification(cfg)
    assert lm.training and models.direct_gpt2(lm) and models.direct_gpt2(rm)  # zero dropout: training qualifies
    ids = torch.randint(4, len(tok), (6, 15))
    lengths = torch.tensor([15, 3, 9, 14, 1, 7])
    mask = (torch.arange(15)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, tok.pad_token_id)

    def run(model, fn):
        model.zero_grad()
        out = fn()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    real = mask.bool()
    got_lm = run(lm, lambda: models.lm_logits(lm, ids)[real])
    got_rm = run(rm, lambda: models.reward_forward(rm, ids, mask))
    got_loss = models.next_token_loss(lm, ids[:1])
    monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    assert not models.direct_gpt2(lm)
    want_lm = run(lm, lambda: lm(input_ids=ids, attention_mask=mask).logits[real])
    want_rm = run(rm, lambda: rm(input_ids=ids, attention_mask=mask).logits[:, 0])
    torch.testing.assert_close(got_lm[0], want_lm[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_rm[0], want_rm[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(got_lm[1] + got_rm[1], want_lm[1] + want_rm[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_loss, lm(input_ids=ids[:1], labels=ids[:1]).loss, rtol=1e-5, atol=1e-6)
    assert got_rm[0].std() > 0 and got_lm[0].std() > 0


def test_prompts_of_one_length_share_a_prefix_batch_and_score_as_joined_texts():
    """A PPO evaluation's shape (a few completions of many prompts of one length): the prompts run
    together in one batch, each completion reading its own prompt, and log-probs and rewards equal
    the joined texts' forward pass."""
    import overopt.models as models
    from conftest import tiny_lm_and_rm
    from overopt.text import prompt_batches, split_at_prompts
    from overopt.rm import rewards, rewards_by_prompt

    tok, lm, rm = tiny_lm_and_rm(32)
    rng = np.random.default_rng(0)
    heads = ["".join(rng.choice(list("abcdefgh ,."), 10)) for _ in range(12)]
    prompts = [h for h in heads for _ in range(8)]
    comps = ["".join(rng.choice(list("abcdefgh ,."), rng.integers(4, 9))) for _ in prompts]
    batches = list(prompt_batches(split_at_prompts(tok, prompts, comps)[0], 40))
    assert [len(b[0]) for b in batches] == [5, 5, 2]  # rows of several prompts share a batch
    want = models.completion_logprobs_joined(lm, tok, prompts, comps)
    np.testing.assert_allclose(models.completion_logprobs(lm, tok, prompts, comps, batch_size=10), want, atol=1e-5)
    want = rewards(rm, tok, [p + c for p, c in zip(prompts, comps)])
    np.testing.assert_allclose(rewards_by_prompt(rm, tok, prompts, comps, batch_size=40), want, atol=1e-5)
    assert np.ptp(want) > 0


def test_bfloat16_gelu_from_its_table_has_the_kernels_bits():
    """Every one of the 65,536 bfloat16 numbers (infinities, NaNs, subnormals included), in a
    shuffled 2-D tensor, gets the bits the GELU kernel gives it; with a gradient to carry, the
    kernel runs."""
    import torch.nn.functional as F
    from overopt.models import _gelu

    every = torch.arange(2**16, dtype=torch.int32).to(torch.uint16).view(torch.bfloat16)
    x = every[torch.randperm(2**16, generator=torch.Generator().manual_seed(0))].view(256, 256)
    for approximate in ("tanh", "none"):
        assert torch.equal(_gelu(x, approximate).view(torch.int16), F.gelu(x, approximate=approximate).view(torch.int16))
    w = torch.randn(8, dtype=torch.bfloat16, requires_grad=True)
    _gelu(w, "tanh").sum().backward()
    assert w.grad is not None and (w.grad != 0).any()


def test_a_missing_model_folder_is_named_not_asked_of_the_hub(tmp_path, monkeypatch):
    from overopt.hf import read_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    for ref in ["results/tokenizer", str(tmp_path / "gone"), "./gone", "a/b/c"]:
        with pytest.raises(FileNotFoundError, match=f"^{re.escape(ref)}: no such directory"):
            load_tokenizer(ref)
        with pytest.raises(FileNotFoundError, match=re.escape(ref)):
            load_causal(ref)
    # what can only be a hub id stays one
    assert read_spec("gpt2") == {"hf": "gpt2"} and read_spec("owner/name") == {"hf": "owner/name"}
