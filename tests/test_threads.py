"""Training on 2 threads gives the bits of 1 thread. Each case also runs 2 threads with the two
per-thread row sums left to torch (`_threaded_grad` off), to show that its shapes reach the sums
that thread count changes."""

import contextlib
import hashlib

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import count_e, labelled_pairs, tiny_lm_and_rm

import overopt.models as models
from overopt.models import pretrain
from overopt.ppo import PPOConfig, run_ppo
from overopt.rm import train_rm
from overopt.text import build_char_tokenizer, corpus_split


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@contextlib.contextmanager
def per_thread_sums(monkeypatch):
    """Training as torch does it on its own: the row sums split by thread."""
    with monkeypatch.context() as m:
        m.setattr(models, "_threaded_grad", lambda *t: False)
        yield


def digest(directory) -> dict:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(directory.iterdir()) if f.is_file()
            and f.suffix == ".safetensors"}


def grads(threads: int, plain: bool):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(100, 128, generator=g, requires_grad=True)
    w, b = (torch.randn(128, generator=g, requires_grad=True) for _ in range(2))
    ids = torch.randint(0, 100, (32, 64), generator=g)
    dy = torch.randn(32, 64, 128, generator=g)
    x = W[ids] if plain else models._take(W, ids)
    y = F.layer_norm(x, (128,), w, b) if plain else models._layer_norm(x, (128,), w, b, 1e-5)
    y.backward(dy)
    return [t.grad for t in (W, w, b)]


def test_layer_norm_and_gather_gradients_are_the_one_thread_bits():
    one = grads(1, plain=True)  # what every job computed on its one thread
    for ours, theirs in zip(grads(2, plain=False), one):
        assert torch.equal(ours, theirs)
    split = grads(2, plain=True)
    assert not all(torch.equal(s, o) for s, o in zip(split, one)), "2 threads sum these rows as 1 does here"


def test_pretraining_gives_the_same_weights_on_any_thread_count(tmp_path, monkeypatch):
    train, held = corpus_split()
    build_char_tokenizer(train + held).save_pretrained(str(tmp_path / "tok"))
    spec = {"n_layer": 2, "n_embd": 64, "n_head": 4}

    def run(name, threads):
        pretrain(spec, train, held, str(tmp_path / "tok"), str(tmp_path / name), steps=4, batch_size=32,
                 seq_len=64, lr=3e-3, seed=0, threads=threads)
        return digest(tmp_path / name)

    one = run("one", 1)
    assert run("two", 2) == one
    with per_thread_sums(monkeypatch):
        assert run("split", 2) != one


def test_a_proxy_trains_to_the_same_weights_on_any_thread_count(tmp_path, monkeypatch):
    labelled_pairs(tmp_path)
    tok, lm, _ = tiny_lm_and_rm(64)
    lm.save_pretrained(str(tmp_path / "base"))
    tok.save_pretrained(str(tmp_path / "base"))

    def run(name, threads):
        m = train_rm(str(tmp_path / "base"), str(tmp_path / "cmp.parquet"), str(tmp_path / name), data_size=500, seed=0,
                     epochs=1, batch_size=64, lr=1e-3, threads=threads, base_loglik=True, policy="p", rm="r")
        return digest(tmp_path / name), m["val_loss"]

    one = run("one", 1)
    assert run("two", 2) == one
    with per_thread_sums(monkeypatch):
        assert run("split", 2) != one


def test_ppo_gives_the_same_run_on_any_thread_count(tmp_path, monkeypatch):
    train, held = corpus_split()
    build_char_tokenizer(train + held).save_pretrained(str(tmp_path / "tok"))
    pretrain({"n_layer": 2, "n_embd": 64, "n_head": 4}, train, held, str(tmp_path / "tok"), str(tmp_path / "policy"),
             steps=2, batch_size=16, seq_len=32, lr=3e-3, seed=0, threads=1)
    prompts = [train[i : i + 16] for i in range(0, 16000, 97)]
    cfg = PPOConfig(steps=4, batch_size=64, minibatch_size=32, epochs=2, lr=1e-3, eval_every=2, eval_prompts=8,
                    eval_samples=4, checkpoint_every=100, seed=0)

    def run(name, threads):
        curve = run_ppo(str(tmp_path / "policy"), count_e, count_e, str(tmp_path / f"{name}.csv"),
                        str(tmp_path / f"c_{name}"), prompts, prompts[:8], 32, cfg, threads=threads,
                        updates_out=str(tmp_path / f"{name}.updates.csv"))
        return curve, pd.read_csv(tmp_path / f"{name}.updates.csv")

    one = run("one", 1)
    for a, b in zip(run("two", 2), one):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    with per_thread_sums(monkeypatch):
        split = run("split", 2)
    assert not all(a.equals(b) for a, b in zip(split, one))
