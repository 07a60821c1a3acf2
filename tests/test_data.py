import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from overopt.text import build_char_tokenizer, corpus_split, random_prompts

from overopt.comparisons import flip_labels, make_pairs
from overopt.rm import chosen_rejected, train_subset
from overopt.rm import bt_loss


def test_bt_loss_matches_hand_computed_values():
    rc = torch.tensor([2.0, 0.0, -1.0])
    rr = torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(2), -log sigmoid(0), -log sigmoid(-2)
    want = np.mean([np.log1p(np.exp(-2.0)), np.log(2.0), np.log1p(np.exp(2.0))])
    assert bt_loss(rc, rr).item() == pytest.approx(want, rel=1e-6)
    # stays finite for huge margins, where log(sigmoid(x)) would underflow to -inf
    assert torch.isfinite(bt_loss(torch.tensor([-200.0]), torch.tensor([200.0])))
    assert bt_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item() == pytest.approx(400.0)


def test_bt_loss_gradient_pushes_chosen_up():
    rc = torch.tensor([0.5], requires_grad=True)
    rr = torch.tensor([0.5], requires_grad=True)
    bt_loss(rc, rr).backward()
    assert rc.grad.item() == pytest.approx(-0.5) and rr.grad.item() == pytest.approx(0.5)


def test_flip_labels_rate_and_determinism():
    lab = np.ones(20000, dtype=np.int8)
    assert (flip_labels(lab, 0.0, np.random.default_rng(0)) == lab).all()
    flipped = flip_labels(lab, 0.25, np.random.default_rng(1))
    rate = (flipped != lab).mean()
    assert abs(rate - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(lab))
    again = flip_labels(lab, 0.25, np.random.default_rng(1))
    assert (flipped == again).all()
    with pytest.raises(ValueError, match="label_noise"):
        flip_labels(lab, 0.6, np.random.default_rng(0))


def _pairs(noise=0.0, seed=0):
    prompts = [f"p{i}" for i in range(10)]
    a = [f"a{i}" for i in range(10)]
    b = [f"b{i}" for i in range(10)]
    ga = np.array([1, 0, 3, 3, 0, 5, 1, 2, 0, 9.0])
    gb = np.array([0, 1, 2, 3, 1, 4, 2, 1, 1, 0.0])
    return make_pairs(prompts, a, b, ga, gb, n_val=3, label_noise=noise, rng=np.random.default_rng(seed))


def test_make_pairs_labels_split_and_chosen():
    df = _pairs()
    assert list(df["split"]) == ["train"] * 7 + ["val"] * 3
    expect = [1, 0, 1, None, 0, 1, 0, 1, 0, 1]
    for got, want in zip(df["gold_label"], expect):
        if want is not None:
            assert got == want
    assert df.loc[3, "gold_label"] in (0, 1)  # the tie was broken, not dropped
    chosen, rejected = chosen_rejected(df)
    assert chosen[0] == "p0a0" and rejected[0] == "p0b0"
    assert chosen[1] == "p1b1" and rejected[1] == "p1a1"


def test_label_noise_touches_train_split_only():
    df = _pairs(noise=0.45, seed=3)
    val = df[df["split"] == "val"]
    assert (val["label"] == val["gold_label"]).all()
    flipped = [_pairs(noise=0.45, seed=s) for s in range(20)]
    assert any((d["label"] != d["gold_label"]).any() for d in flipped)


def test_train_subsets_are_nested():
    df = _pairs()
    small, big = train_subset(df, 3), train_subset(df, 6)
    assert list(small["pair_id"]) == list(big["pair_id"][:3])
    assert (big["split"] == "train").all()
    with pytest.raises(ValueError, match="exceeds"):
        train_subset(df, 8)


def test_corpus_split_and_tokenizer_roundtrip():
    train, held = corpus_split()
    assert len(train) > 300_000 and len(held) > 20_000
    assert held not in train and held[:200] not in train
    tok = build_char_tokenizer(train + held)
    text = held[1000:1100]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} == {0, 1, 2}
    prompts = random_prompts(train, 50, 24, np.random.default_rng(0))
    assert all(len(p) == 24 for p in prompts)
    assert prompts == random_prompts(train, 50, 24, np.random.default_rng(0))


def _char_tok():
    return build_char_tokenizer("the quick brown fox, (jumps) over 12 lazy dogs; <a>")


def test_char_codec_encodes_and_decodes_exactly_as_the_tokenizer():
    """Table lookups give the tokenizer's ids on every text, including ones the fast path hands
    back to the tokenizer (line breaks, special-token strings) and characters outside the vocabulary."""
    from overopt.text import CharCodec, decode_ids, encode_texts

    tok = _char_tok()
    assert CharCodec.of(tok) is not None
    rng = np.random.default_rng(0)
    alphabet = list("the qk,()<>a12") + ["\n", "\r", "\u00e9", "\u20ac", "Z", "<pad>", "<unk>", "<bos>", "<eos>"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 15))) for _ in range(2000)] + ["", "\n\n"]
    assert encode_texts(tok, texts) == tok(texts, add_special_tokens=False)["input_ids"]
    for low in (0, 4):  # with special ids (inner and trailing) and without
        ids = torch.randint(low, len(tok), (500, 9), generator=torch.Generator().manual_seed(low))
        assert decode_ids(tok, ids) == tok.batch_decode(ids, skip_special_tokens=True)


def test_split_at_prompts_keeps_what_follows_each_prompt_in_the_joined_tokens():
    from overopt.text import encode_texts, split_at_prompts

    tok = _char_tok()
    prompts = ["the fox", "the fox", "dogs", "dogs", ""]
    comps = [" jumps", "", "; (a)", " over", "lazy"]
    groups, rest = split_at_prompts(tok, prompts, comps)
    # an empty completion adds no token and an empty prompt has none to reuse: both on the joined text
    assert sorted(rest.tolist()) == [1, 4]
    seen = {}
    for p_ids, idx, c_ids in groups:
        for i, c in zip(idx, c_ids):
            seen[int(i)] = (p_ids, c)
    assert sorted(seen) == [0, 2, 3]
    for i, (p_ids, c) in seen.items():
        assert p_ids + c == encode_texts(tok, [prompts[i] + comps[i]])[0]
        assert c == encode_texts(tok, [comps[i]])[0]


def test_pairs_sampled_then_labelled_equal_one_draw_of_both(tmp_path):
    """The comparison set made in two jobs (sample, then label by the gold) is the one a single
    job drawing prompts, samples, tie-breaks and label noise from one generator would make."""
    from overopt.comparisons import label_pairs, sample_pairs
    from overopt.gold import build_gold, load_gold
    from overopt.models import load_causal, load_tokenizer, sample_texts
    from overopt.prompts import training_prompts
    from conftest import tiny_base

    train, held = corpus_split()
    base, _ = tiny_base(tmp_path, seed=0)
    build_gold({"tiny": {"terms": {"count": 1.0, "fluency": 0.5}, "reward_chars": ".,e", "fluency_ngram": 3}},
               str(tmp_path / "gold"), None, held, 8, 8, seed=0, train_text=train)
    sample_pairs(str(base), str(tmp_path / "pairs.parquet"), 40, 10, 8, 8, batch_size=16, seed=3, threads=1)
    label_pairs(str(tmp_path / "pairs.parquet"), str(tmp_path / "gold"), str(tmp_path / "cmp.parquet"), 0.2, threads=1)
    got = pd.read_parquet(tmp_path / "cmp.parquet")

    rng = np.random.default_rng(3)
    prompts = training_prompts(None, 50, 8, rng)
    both = sample_texts(load_causal(base), load_tokenizer(base), prompts + prompts, 8, 16, 3)
    gold = load_gold(tmp_path / "gold")
    ga, gb = gold.score(prompts, both[:50]), gold.score(prompts, both[50:])
    want = make_pairs(prompts, both[:50], both[50:], ga, gb, 10, 0.2, rng)
    g = np.concatenate([ga, gb])
    want["gold_a"], want["gold_b"] = (want["gold_a"] - g.mean()) / g.std(), (want["gold_b"] - g.mean()) / g.std()
    pd.testing.assert_frame_equal(got, want)
    assert (got["label"] != got["gold_label"]).any()  # the noise draw ran, from the continued generator


def test_labels_in_parts_are_the_labels_of_one_job(tmp_path):
    """Labelling a comparison set in parts (one gold job per range of pairs, `config.label_parts`)
    and joining them gives the file one job labelling every pair writes, byte for byte; a proxy
    reading the parts up to its data size reads the same rows as one reading the whole set."""
    from overopt.comparisons import label_pairs, merge_parts, sample_pairs
    from overopt.keys import read_comparisons
    from overopt.gold import build_gold
    from conftest import tiny_base

    train, held = corpus_split()
    base, _ = tiny_base(tmp_path, seed=0)
    # the fluency term from an LM: its batches differ between a part and the whole set
    build_gold({"tiny": {"terms": {"count": 1.0, "fluency": 0.5}, "reward_chars": ".,e"}},
               str(tmp_path / "gold"), str(base), held, 8, 8, seed=0, train_text=train)
    pairs, gold = str(tmp_path / "pairs.parquet"), str(tmp_path / "gold")
    sample_pairs(str(base), pairs, 40, 10, 8, 8, batch_size=16, seed=3, threads=1)
    label_pairs(pairs, gold, str(tmp_path / "one.parquet"), 0.2, threads=1)
    rows = [[(0, 15), (40, 50)], [(15, 40)]]  # data sizes 15 and 40, the validation pairs in the first part
    parts = [str(tmp_path / f"part{k}.parquet") for k in range(2)]
    for r, out in zip(rows, parts):
        label_pairs(pairs, gold, out, 0.2, threads=1, rows=r)
    merge_parts(parts[::-1], str(tmp_path / "joined.parquet"))
    for suffix in (".parquet", ".json"):
        assert (tmp_path / f"joined{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()
    whole = pd.read_parquet(tmp_path / "one.parquet")
    assert (whole["label"] != whole["gold_label"]).sum() > 0  # the noise draw ran in every part
    cols = ["pair_id", "split", "prompt", "completion_a", "completion_b", "gold_label", "label"]
    first = read_comparisons(parts[:1])
    want = whole[(whole["pair_id"] < 15) | (whole["split"] == "val")].reset_index(drop=True)
    pd.testing.assert_frame_equal(first[cols], want[cols])
    with pytest.raises(ValueError, match="not the first 25"):
        read_comparisons(parts[1:])  # training pairs 15..39 without 0..14
    with pytest.raises(ValueError, match="every pair exactly once"):
        merge_parts(parts[:1], str(tmp_path / "short.parquet"))
    sample_pairs(str(base), str(tmp_path / "other.parquet"), 40, 10, 8, 8, batch_size=16, seed=4, threads=1)
    label_pairs(str(tmp_path / "other.parquet"), gold, str(tmp_path / "other1.parquet"), 0.2, threads=1, rows=rows[1])
    with pytest.raises(ValueError, match="parts of different comparison sets"):
        merge_parts([parts[0], str(tmp_path / "other1.parquet")], str(tmp_path / "mixed.parquet"))


def test_label_parts_hold_runs_of_part_pairs_whatever_the_data_sizes():
    from pathlib import Path

    from overopt.config import label_part_count, label_parts, validate

    cfg = validate(yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text()))
    cfg["comparisons"]["part_pairs"] = 4000
    parts = label_parts(cfg, "lm-m")
    assert parts == [[(0, 4000), (16000, 17000)], [(4000, 8000)], [(8000, 12000)], [(12000, 16000)]]
    assert [label_part_count(cfg, "lm-m", d) for d in (1000, 4000, 16000, None)] == [1, 1, 4, 4]
    assert label_parts(cfg, "lm-s") == [[(0, 4000), (4000, 5000)]]
    cfg["subgrids"][1]["data_sizes"] = [1000, 2000, 4000, 16000]  # a data size added below the largest
    assert label_parts(cfg, "lm-m") == parts
