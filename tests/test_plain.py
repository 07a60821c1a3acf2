"""`plain`: the tiny world's GPT-2s and tokenizer loaded without transformers hold the tensors the
transformers classes hold, under the same names in the same order, draw the same fresh score head
from the same seed, compute the same numbers, and save directories transformers loads back."""

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny-world GPT-2 LM (the config `models.tiny_config` writes) saved by transformers."""
    from transformers import GPT2LMHeadModel

    from overopt.models import tiny_config
    from overopt.text import build_char_tokenizer, corpus_split

    d = tmp_path_factory.mktemp("plain") / "lm"
    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_config({"n_layer": 2, "n_embd": 32, "n_head": 4}, tok)).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def _hf(path, kind, **kw):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "lm":
        return AutoModelForCausalLM.from_pretrained(str(path))
    return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, **kw)


def _same(a, b):
    na, nb = [n for n, _ in a.named_parameters()], [n for n, _ in b.named_parameters()]
    return na == nb and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_an_lm_loads_as_transformers_loads_it_and_computes_the_same(tiny_dir):
    from overopt import models, plain

    assert plain.loadable(tiny_dir)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    lm = models.load_causal(tiny_dir)
    assert isinstance(lm, plain.GPT2) and not lm.training
    assert torch.equal(torch.get_rng_state(), before)  # loading draws nothing
    hf = _hf(tiny_dir, "lm")
    assert _same(lm, hf) and lm.lm_head.weight is lm.transformer.wte.weight
    ids = torch.randint(4, len(models.load_tokenizer(tiny_dir)), (3, 20))
    assert torch.equal(models.lm_logits(lm, ids), models.lm_logits(hf, ids))
    np.testing.assert_allclose(models.lm_logits(lm, ids).detach().numpy(), hf(input_ids=ids).logits.detach().numpy(), atol=1e-5)
    with pytest.raises(TypeError, match="direct passes"):
        lm(input_ids=ids)


def test_a_reward_model_from_an_lm_draws_the_same_head_and_saves_what_transformers_saves(tiny_dir, tmp_path):
    from overopt import models, plain

    torch.manual_seed(7)
    rm = models.load_reward(tiny_dir, pad_token_id=0)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    hf = _hf(tiny_dir, "reward", pad_token_id=0)
    assert isinstance(rm, plain.GPT2) and _same(rm, hf) and torch.equal(after, torch.get_rng_state())
    assert rm.score.weight.abs().max() > 0
    rm.save_pretrained(tmp_path / "plain")
    hf.save_pretrained(str(tmp_path / "hf"))
    cfg = lambda d: {k: v for k, v in json.loads((tmp_path / d / "config.json").read_text()).items()  # noqa: E731
                     if k != "transformers_version"}
    assert cfg("plain") == cfg("hf")
    assert _same(_hf(tmp_path / "plain", "reward"), rm) and _same(models.load_reward(tmp_path / "plain"), rm)


def test_the_tokenizer_matches_transformers(tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    from overopt import models, plain
    from overopt.text import CharCodec, decode_ids, encode_texts

    tok, hf = models.load_tokenizer(tiny_dir), AutoTokenizer.from_pretrained(str(tiny_dir))
    assert isinstance(tok, plain.Tokenizer) and CharCodec.of(tok) is not None
    texts = ["the cat, (sat)", "two\nlines <pad> and <eos>", "unknown \u00e9\u4e2d"]
    assert tok(texts, add_special_tokens=False)["input_ids"] == hf(texts, add_special_tokens=False)["input_ids"]
    assert encode_texts(tok, texts) == hf(texts, add_special_tokens=False)["input_ids"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, len(tok)) == (hf.pad_token_id, hf.bos_token_id,
                                                                               hf.eos_token_id, len(hf))
    assert models.banned_token_ids(tok) == models.banned_token_ids(hf)
    assert tok.convert_ids_to_tokens(models.banned_token_ids(tok)) == hf.convert_ids_to_tokens(models.banned_token_ids(hf))
    ids = torch.tensor([[5, 6, 0, 7], [9, 10, 11, 2]])
    assert decode_ids(tok, ids) == hf.batch_decode(ids, skip_special_tokens=True) == tok.batch_decode(ids, skip_special_tokens=True)
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path)).get_vocab() == hf.get_vocab()


def test_anything_else_loads_through_transformers(tiny_dir, tmp_path, monkeypatch):
    import shutil

    from overopt import models, plain

    monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    assert not plain.loadable(tiny_dir) and not isinstance(models.load_causal(tiny_dir), plain.GPT2)
    assert not isinstance(models.load_tokenizer(tiny_dir), plain.Tokenizer)
    monkeypatch.delenv("OVEROPT_ENGINE")
    shutil.copytree(tiny_dir, tmp_path / "drop")
    cfg = json.loads((tmp_path / "drop" / "config.json").read_text())
    (tmp_path / "drop" / "config.json").write_text(json.dumps({**cfg, "resid_pdrop": 0.1}))
    assert not plain.loadable(tmp_path / "drop")  # dropout: only the HF pass honours it
    assert plain.tokenizer_loadable(tmp_path / "drop")
    (tmp_path / "drop" / "chat_template.jinja").write_text("{{ messages }}")
    assert not plain.tokenizer_loadable(tmp_path / "drop")  # a chat template: transformers renders it
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"hf": str(tiny_dir)}))
    assert not plain.loadable(spec)  # an hf: spec
    assert not isinstance(models.load_causal(tiny_dir, dtype=torch.bfloat16), plain.GPT2)
