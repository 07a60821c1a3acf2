"""SFT (`sft:`): a policy's base fine-tuned on demonstrations becomes pi_init, a cached target that
every job loading pi_init reads through its spec file."""

import copy
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import ROOT, snakemake_cmd, tiny_base, write_config


def test_sft_trains_on_the_demonstrations_and_keeps_the_base_settings(tmp_path):
    from overopt.hf import read_spec
    from overopt.models import load_causal, load_tokenizer, lm_loss, encode_corpus
    from overopt.sft import demonstrations, sft

    base, tok = tiny_base(tmp_path, seed=0)
    spec = tmp_path / "base.json"
    spec.write_text(json.dumps({"hf": str(base), "template": "raw", "lora": {"r": 2}}))
    texts = [f"the answer is {i % 7} and the question was {i}." for i in range(400)]
    (tmp_path / "demos.jsonl").write_text("\n".join(json.dumps({"demo": t}) for t in texts))
    train, held = demonstrations(str(tmp_path / "demos.jsonl"), "demo")
    assert held.split("\n") == texts[380:]
    out, spec_out = tmp_path / "sft", tmp_path / "sft.json"
    m = sft(str(spec), str(out), str(spec_out), train, held, steps=60, batch_size=8, seq_len=24, lr=3e-3, seed=0, threads=1)
    # the held-out demonstrations got likelier than under the base
    before = lm_loss(load_causal(str(spec)), encode_corpus(held, tok), 24, 256)
    assert m["val_loss_nats_per_char"] < before - 0.3
    new = read_spec(spec_out)
    assert new == {"hf": str(out), "template": "raw", "lora": {"r": 2}, "params": m["params"]}
    a, b = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a if k.endswith("c_attn.weight"))
    assert len(load_tokenizer(str(spec_out))) == len(tok)
    with pytest.raises(ValueError, match="no column 'text'"):
        demonstrations(str(tmp_path / "demos.jsonl"), "text")


def test_sft_policy_is_what_the_pool_pairs_and_ppo_load(smoke_config, tmp_path):
    """With `sft:` every job that loads pi_init reads the fine-tuned policy; `overopt plan` counts
    the same jobs as Snakemake."""
    import re

    from overopt.config import validate
    from overopt.plan import plan

    cfg = copy.deepcopy(smoke_config)
    cfg["sft"] = {"steps": 5, "lr": 1e-3, "batch_size": 4, "seq_len": 16}
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "-n", "-p")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for cmd in ("overopt pool", "overopt pairs", "overopt ppo"):
        lines = [line for line in r.stdout.splitlines() if line.startswith(f"Shell command: {cmd} ")]
        assert lines and all(re.search(r"--policy results/sft/p2?\.json ", line) for line in lines), cmd
    stats = r.stdout[r.stdout.index("Job stats"):]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert counts["sft"] == 2
    counts.pop("all"), counts.pop("total")
    assert {k: v for k, v in plan(validate(cfg))["jobs"].items() if v} == counts


def test_sft_of_an_hf_policy_needs_demonstrations(smoke_config):
    """The corpus fallback is the tiny world's: an hf policy without a demonstrations file is refused."""
    from overopt.config import ConfigError, validate

    cfg = copy.deepcopy(smoke_config)
    cfg["models"]["p"] = {"hf": "org/policy", "params": 1e8}
    cfg["sft"] = {"steps": 5, "lr": 1e-5}
    with pytest.raises(ConfigError, match=r"config key 'sft.demonstrations': policy 'p'"):
        validate(cfg)
    cfg["sft"]["demonstrations"] = {"path": "demos.jsonl"}
    assert validate(cfg)["sft"]["demonstrations"]["column"] == "text"
