"""A PPO run's checkpoint: everything needed to continue a killed run bit for bit, and the
fingerprint that lets only the same run resume from it. safetensors and weights-only tensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def inputs_fingerprint(paths, **settings) -> str:
    """A digest of a run's settings and of its input files' names, sizes and modification times:
    a checkpoint left by a killed run is resumed only by the same run. Retrain its proxy or change
    a setting, and the rerun starts over instead of continuing from the old run's state. (Stats,
    not contents: hashing a real-scale policy's gigabytes on every start would cost minutes.)"""
    import hashlib

    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def save_checkpoint(ckpt: Path, step: int, policy, value, opt, g, rng, rows, fingerprint: str = "", updates=()) -> None:
    """Everything needed to continue bit-for-bit; safetensors and weights-only tensors only.
    A LoRA policy saves only what trains (its adapter): the base is the frozen pi_init."""
    from safetensors.torch import save_file, save_model

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    if is_lora(policy):
        save_file({n: p.detach().cpu().contiguous() for n, p in policy.named_parameters() if p.requires_grad},
                  str(tmp / "policy.safetensors"))
    else:
        save_model(policy, str(tmp / "policy.safetensors"))  # handles the tied embedding/unembedding
    save_file({k: v.cpu() for k, v in value.state_dict().items()}, str(tmp / "value.safetensors"))
    torch.save({"opt": opt.state_dict(), "torch_rng": g.get_state()}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "numpy_rng": rng.bit_generator.state, "rows": rows,
                                                   "updates": list(updates), "fingerprint": fingerprint}))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def load_checkpoint(ckpt: Path, policy, value, opt, g, rng):
    from safetensors.torch import load_file, load_model

    if is_lora(policy):
        unexpected = policy.load_state_dict(load_file(str(ckpt / "policy.safetensors")), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{ckpt}: checkpoint does not match the adapter: {unexpected[:3]}")
    else:
        load_model(policy, str(ckpt / "policy.safetensors"))
    value.load_state_dict(load_file(str(ckpt / "value.safetensors")))
    state = torch.load(ckpt / "state.pt", weights_only=True)
    opt.load_state_dict(state["opt"])
    g.set_state(state["torch_rng"])
    meta = json.loads((ckpt / "meta.json").read_text())
    rng.bit_generator.state = meta["numpy_rng"]
    return meta["step"], meta["rows"], meta.get("updates", [])
