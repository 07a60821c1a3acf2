import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "smoke" / "config.yaml"
BIN = Path(sys.executable).parent


def snakemake_cmd(workdir, *args):
    """Run the workflow CLI in `workdir` (which holds config.yaml); return the CompletedProcess."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True, text=True, env=env,
    )


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="package")
def smoke_config():
    return yaml.safe_load(SMOKE.read_text())


@pytest.fixture(scope="package")
def smoke_run(tmp_path_factory, smoke_config):
    """The whole smoke DAG through Snakemake itself, once per test run."""
    wd = tmp_path_factory.mktemp("smoke")
    write_config(wd, smoke_config)
    r = snakemake_cmd(wd, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return wd


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
    """A private copy of the finished smoke run (results and Snakemake metadata)."""
    wd = tmp_path / "wd"
    shutil.copytree(smoke_run, wd, symlinks=True)
    return wd


@contextlib.contextmanager
def killed_after(step: int):
    """PPO killed right after it writes its checkpoint at `step`, as a scheduler would kill it."""
    import overopt.ppo as ppo

    real = ppo.save_checkpoint

    def save(ckpt, s, *args, **kwargs):
        real(ckpt, s, *args, **kwargs)
        if s >= step:
            raise KeyboardInterrupt(f"killed after step {s}")

    ppo.save_checkpoint = save
    try:
        yield
    finally:
        ppo.save_checkpoint = real


@pytest.fixture
def resumed_from(monkeypatch):
    """The step each PPO run of the test resumed from, in order: what its checkpoint loads returned."""
    import overopt.ppo as ppo

    starts, real = [], ppo.load_checkpoint

    def load(*args, **kwargs):
        out = real(*args, **kwargs)
        starts.append(out[0])
        return out

    monkeypatch.setattr(ppo, "load_checkpoint", load)
    return starts


def tiny_base(tmp_path, seed):
    """A randomly initialised 1-layer GPT-2 LM on the corpus's character tokenizer, saved in tmp_path/base."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from overopt.text import build_char_tokenizer, corpus_split

    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                     pad_token_id=tok.pad_token_id)
    base = tmp_path / "base"
    GPT2LMHeadModel(cfg).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    return base, tok


def tiny_lm_and_rm(n_embd: int, n_head: int = 4, n_layer: int = 2):
    """The character tokenizer and an LM and a reward model of one tiny-world GPT-2 config,
    randomly initialised from seed 0, in eval mode."""
    import torch
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    from overopt.models import tiny_config
    from overopt.text import build_char_tokenizer, corpus_split

    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    cfg = tiny_config({"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head}, tok)
    return tok, GPT2LMHeadModel(cfg).eval(), GPT2ForSequenceClassification(cfg).eval()


def labelled_pairs(tmp_path, n=600, n_val=100):
    """Comparison pairs of corpus windows in tmp_path/cmp.parquet, labelled half by a symbol count the
    head can see and half by noise."""
    import numpy as np
    import pandas as pd

    from overopt.text import corpus_split

    text = corpus_split()[0]
    rng = np.random.default_rng(1)
    starts = rng.integers(0, len(text) - 40, (n, 3))
    prompts = [text[s : s + 12] for s in starts[:, 0]]
    a, b = [text[s : s + 12] for s in starts[:, 1]], [text[s : s + 12] for s in starts[:, 2]]
    # labels half explained by a symbol count the head can see, half noise
    score = np.array([sum(ch in ".,()" for ch in x) - sum(ch in ".,()" for ch in y) for x, y in zip(a, b)])
    label = np.where(score + rng.normal(0, 1, n) > 0, 1, 0).astype(np.int8)
    df = pd.DataFrame({"pair_id": range(n), "split": ["train"] * (n - n_val) + ["val"] * n_val, "prompt": prompts,
                       "completion_a": a, "completion_b": b, "gold_a": 0.0, "gold_b": 0.0,
                       "gold_label": label, "label": label})
    df.to_parquet(tmp_path / "cmp.parquet")
    return df


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A 1-layer GPT-2 policy pretrained for 150 steps, and training prompts from the corpus."""
    from overopt.models import pretrain
    from overopt.text import build_char_tokenizer, corpus_split

    d = tmp_path_factory.mktemp("ppo")
    train, held = corpus_split()
    build_char_tokenizer(train + held).save_pretrained(str(d / "tok"))
    pretrain({"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}, train, held, str(d / "tok"),
             str(d / "policy"), steps=150, batch_size=16, seq_len=32, lr=3e-3, seed=0, threads=1)
    prompts = [train[i : i + 8] for i in range(0, 8000, 97)]
    return d, prompts


def count_e(prompts, comps):
    """A toy reward: the letter e in each completion."""
    import numpy as np

    return np.array([c.count("e") for c in comps], dtype=float)
