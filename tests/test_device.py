"""Device placement: `OVEROPT_DEVICE` (else CUDA when there is one) is where the `hf:` path runs.

The CPU tests run everywhere; the GPU tests skip without one (CI has none): they check that a
short PPO run and proxy/gold scoring run on CUDA and stay seeded (GPU numbers need not equal
CPU numbers, only repeat)."""

import numpy as np
import pandas as pd
import pytest

from conftest import killed_after
import torch

import hf_world
from overopt import util
from overopt.util import device, generator, native_bf16, resolve_dtype, write_json

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return hf_world.build(tmp_path_factory.mktemp("hf_world"))


def test_device_honours_the_env_var(monkeypatch):
    monkeypatch.setenv("OVEROPT_DEVICE", "cpu")
    assert device() == torch.device("cpu")
    monkeypatch.setenv("OVEROPT_DEVICE", "cuda:1")  # taken as named, not probed
    assert device() == torch.device("cuda:1")
    monkeypatch.delenv("OVEROPT_DEVICE")
    assert device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_precision_is_bf16_only_on_cpus_with_bf16_units(monkeypatch):
    """`bon.score_dtype: auto`: emulated bf16 made proxy scoring many times slower on an
    AVX2-only CPU, so bf16 is chosen only where the flags name bf16 hardware."""
    monkeypatch.setenv("OVEROPT_DEVICE", "cpu")
    avx2 = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
    assert not native_bf16(avx2)
    assert native_bf16(avx2.replace("avx2", "avx2 avx512f avx512_bf16"))
    assert native_bf16(avx2.replace("fma", "fma amx_tile amx_bf16"))
    assert not native_bf16(avx2.replace("avx2", "avx512_bf16x"))  # whole flags only
    assert native_bf16("processor : 0\nFeatures : fp asimd sve bf16 i8mm\n")  # aarch64
    for has, want in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(util, "native_bf16", lambda has=has: has)
        assert resolve_dtype("auto") == want
        assert resolve_dtype("float32") == torch.float32 and resolve_dtype("bfloat16") == torch.bfloat16


def test_cpu_generator_draws_what_a_plain_seeded_generator_draws(monkeypatch):
    """On the CPU the helper is `torch.Generator().manual_seed(seed)`: the tiny world's numbers."""
    monkeypatch.setenv("OVEROPT_DEVICE", "cpu")
    g = generator(3)
    assert g.device == torch.device("cpu")
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=torch.Generator().manual_seed(3)))


def test_models_are_placed_on_the_named_device(world, monkeypatch, tmp_path):
    """Policy and proxy loaders honour the device (the meta device stands in for a GPU here)."""
    from overopt.models import load_causal, load_reward

    monkeypatch.setenv("OVEROPT_DEVICE", "meta")
    assert load_causal(world["policy"]).device.type == "meta"
    assert load_reward(world["large"], pad_token_id=0).device.type == "meta"
    monkeypatch.setenv("OVEROPT_DEVICE", "cpu")
    assert load_causal(world["policy"]).device.type == "cpu"


# --------------------------------------------------------------------------- GPU only


def _ppo(world, tmp_path, name, lora):
    from overopt.ppo import PPOConfig, run_ppo

    spec = {"hf": world["policy"], **({"lora": {"r": 4, "alpha": 8}} if lora else {})}
    write_json(spec, tmp_path / f"{name}.json")
    prompts = pd.read_json(world["prompts"], lines=True)["text"].tolist()
    reward = lambda ps, comps: np.array([c.count(" ") for c in comps], dtype=float)
    cfg = PPOConfig(steps=4, batch_size=8, minibatch_size=4, epochs=1, lr=1e-2, eval_every=2, eval_prompts=4,
                    eval_samples=2, checkpoint_every=2, seed=0)
    return run_ppo(str(tmp_path / f"{name}.json"), reward, reward, str(tmp_path / f"{name}.csv"),
                   str(tmp_path / f"{name}.ckpt"), prompts, prompts[:4], 6, cfg, threads=1)


@gpu
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_ppo_on_the_gpu_is_seeded_and_resumes(world, tmp_path, monkeypatch, lora, resumed_from):
    """Two runs give the same CSV, and so does a run killed after step 2 and resumed (the CUDA
    generator's state goes through the checkpoint). Up to float noise: some CUDA backward
    kernels (gather's scatter-add) accumulate in no fixed order."""
    monkeypatch.delenv("OVEROPT_DEVICE", raising=False)
    assert device().type == "cuda"
    a = _ppo(world, tmp_path, "a", lora)
    b = _ppo(world, tmp_path, "b", lora)
    pd.testing.assert_frame_equal(a, b, rtol=1e-3)
    with pytest.raises(KeyboardInterrupt), killed_after(2):
        _ppo(world, tmp_path, "c", lora)
    pd.testing.assert_frame_equal(a, _ppo(world, tmp_path, "c", lora), rtol=1e-3)
    assert resumed_from == [2]
    assert np.isfinite(a.drop(columns="step").to_numpy()).all() and a["kl"].iloc[-1] != 0


@gpu
def test_sampling_and_scoring_on_the_gpu(world, monkeypatch):
    from overopt.gold import HFGold
    from overopt.models import load_causal, load_reward, load_tokenizer, sample_texts
    from overopt.rm import rewards, rewards_by_prompt

    monkeypatch.delenv("OVEROPT_DEVICE", raising=False)
    tok = load_tokenizer(world["policy"])
    policy = load_causal(world["policy"])
    assert policy.device.type == "cuda"
    prompts = [p for p in pd.read_json(world["prompts"], lines=True)["text"][:3] for _ in range(4)]
    texts = sample_texts(policy, tok, prompts, 6, 8, seed=0)
    assert texts == sample_texts(policy, tok, prompts, 6, 8, seed=0)
    assert texts != sample_texts(policy, tok, prompts, 6, 8, seed=1)
    proxy = load_reward(world["large"], pad_token_id=tok.pad_token_id)
    assert proxy.device.type == "cuda"
    joined = rewards(proxy, tok, [p + c for p, c in zip(prompts, texts)])
    assert np.isfinite(joined).all()
    # bf16 autocast on the GPU: the reused prompt cache agrees to bf16 precision, not bit for bit
    np.testing.assert_allclose(rewards_by_prompt(proxy, tok, prompts, texts), joined, atol=0.1, rtol=0.05)
    for quantize in (None, "4bit"):
        gold = HFGold(world["gold"], quantize=quantize)
        assert next(gold.model.parameters()).device.type == "cuda"
        assert np.isfinite(gold.score(prompts, texts)).all()
