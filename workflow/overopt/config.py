"""Config validation: the schema in workflow/schemas/, then the checks a schema cannot express.

Every error names the offending key, so a bad config fails before any job starts with a
message that says what to fix.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _fill_defaults(config: dict, schema: dict, root: dict) -> None:
    """Insert schema `default`s for missing optional keys (one level of $ref is enough here)."""
    for name, sub in schema.get("properties", {}).items():
        if "$ref" in sub:  # the referenced definition, with the property's own keys (its default) over it
            sub = {**root["$defs"][sub["$ref"].split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}}
        if name not in config and "default" in sub:
            config[name] = copy.deepcopy(sub["default"])
        if isinstance(config.get(name), dict):
            _fill_defaults(config[name], sub, root)


# rl keys that select runs or fits rather than set PPO: everything else under rl is a PPO setting
RL_SELECTORS = ("data_sizes", "policies", "seeds", "penalty_reward_models", "fit_min_d")


def schema_defaults(*path: str, schema_path: str | Path = SCHEMA) -> dict:
    """The schema's default of every key that has one, in the object at `path` (e.g. "rl", or
    "gold", "tiny")."""
    node = yaml.safe_load(Path(schema_path).read_text())
    for key in path:
        node = node["properties"][key]
    return {k: v["default"] for k, v in node["properties"].items() if "default" in v}


def ppo_settings(config: dict) -> dict:
    """The PPO settings of a validated config (its rl keys that are not run selectors)."""
    return {k: v for k, v in sorted(config["rl"].items()) if k not in RL_SELECTORS}


def tiny_params(spec: dict, vocab: int = 100) -> int:
    """Parameter count of a tiny GPT-2 from its spec (tied embeddings), without building it."""
    d, L, pos = spec["n_embd"], spec["n_layer"], spec.get("n_positions", 128)
    block = 12 * d * d + 13 * d  # attention (4 d^2) + MLP (8 d^2) + biases and two layer norms
    return vocab * d + pos * d + L * block + 2 * d


def model_params(spec: dict) -> int | None:
    """Approximate parameter count of a model spec, for resources and cost estimates.

    tiny: exact from the architecture; hf: the spec's `params` if given, else estimated from a
    local `config.json` (hub ids with no local copy give None: resources fall back to defaults).
    """
    if "tiny" in spec:
        return tiny_params(spec["tiny"])
    if spec.get("params"):
        return int(spec["params"])
    cfg_file = Path(spec["hf"]) / "config.json"
    if not cfg_file.is_file():
        return None
    c = json.loads(cfg_file.read_text())
    d = c.get("hidden_size") or c.get("n_embd") or c.get("d_model")
    L = c.get("num_hidden_layers") or c.get("n_layer")
    V = c.get("vocab_size", 0)
    if not (d and L):
        return None
    ff = c.get("intermediate_size") or c.get("n_inner") or 4 * d
    return int(L * (4 * d * d + 2 * d * ff) + V * d)


AXES = ("policies", "reward_models", "data_sizes")


def cell_seeds(config: dict) -> dict[tuple[str, str, int], list[int]]:
    """Every (policy, reward model, data size) of the study with its proxy seeds: the union of the
    sub-grids, or the full cross product when there are none. A sub-grid's own `seeds` replace the
    top-level list for its cells (the RM-size sweep can take more seeds than the rest); a cell in
    two sub-grids gets the union. Sorted, so targets come out in a stable order."""
    cells: dict = {}
    for sub in config.get("subgrids") or [{}]:
        pols, rms, datas = (sub.get(axis, config[axis]) for axis in AXES)
        for cell in ((p, r, int(d)) for p in pols for r in rms for d in datas):
            cells.setdefault(cell, set()).update(int(s) for s in sub.get("seeds", config["seeds"]))
    return {c: sorted(cells[c]) for c in sorted(cells)}


def grid_cells(config: dict) -> list[tuple[str, str, int]]:
    """Every (policy, reward model, data size) of the study (`cell_seeds` without the seeds)."""
    return list(cell_seeds(config))


def label_parts(config: dict, policy: str) -> list[list[tuple[int, int]]]:
    """The comparison pairs of `policy` labelled by one gold job each, as pair-id ranges: the
    training pairs in runs of `comparisons.part_pairs`, the validation pairs with the first. A
    proxy of data size N waits only on the parts holding its first N pairs; adding a data size
    below the largest leaves every part, and so every proxy, as it was."""
    train = max(d for p, _, d in grid_cells(config) if p == policy)
    step, val = config["comparisons"]["part_pairs"], config["comparisons"]["val_pairs"]
    parts = [[(lo, min(lo + step, train))] for lo in range(0, train, step)]
    parts[0].append((train, train + val))
    return parts


def label_part_count(config: dict, policy: str, data: int | None = None) -> int:
    """How many of `label_parts` a proxy of data size `data` reads (all of them without one)."""
    if data is None:
        return len(label_parts(config, policy))
    return -(-int(data) // config["comparisons"]["part_pairs"])


def gold_part_range(config: dict, part: int) -> tuple[int, int]:
    """Prompts lo..hi-1 of an unsharded pool that gold job `part` of `bon.gold_parts` scores."""
    n, parts = config["bon"]["prompts"], config["bon"]["gold_parts"]
    return int(part) * n // parts, (int(part) + 1) * n // parts


def rl_seeds(config: dict, seeds: list[int]) -> list[int]:
    """The seeds PPO runs on in an RL cell with proxy seeds `seeds`: those within `rl.seeds`, if given."""
    keep = config["rl"].get("seeds")
    return [s for s in seeds if keep is None or s in keep]


def rl_cells(config: dict) -> list[tuple[str, str, int]]:
    """The grid cells that PPO runs on: `rl.policies` x `rl.data_sizes` within the grid."""
    if "rl" not in config["methods"]:
        return []
    pols = config["rl"].get("policies", config["policies"])
    datas = config["rl"].get("data_sizes", config["data_sizes"])
    return [c for c in grid_cells(config) if c[0] in pols and c[2] in datas]


def rl_runs(config: dict) -> list[tuple[str, str, int, float]]:
    """(policy, rm, data, kl_penalty) of every PPO run (x seeds): the RL cells x kl_penalties,
    a non-zero penalty only on `rl.penalty_reward_models` (default every RL reward model)."""
    pen_rms = config["rl"].get("penalty_reward_models")
    return [(p, r, d, kl) for p, r, d in rl_cells(config) for kl in config["kl_penalties"]
            if kl == 0 or pen_rms is None or r in pen_rms]


HF_ONLY = ("params", "tokenizer", "template", "lora", "quantize")


def _check_kind(spec: dict, key: str) -> None:
    """Exactly one of tiny/hf, and the hf options only beside hf."""
    kinds = [k for k in ("tiny", "hf") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"config key '{key}': give exactly one of 'tiny' or 'hf' (got {kinds or 'neither'})")
    if "tiny" in spec:
        for k in HF_ONLY:
            if k in spec:
                raise ConfigError(f"config key '{key}.{k}': only for hf models")


def validate(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(dict(config))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors:
            if e.validator == "additionalProperties":
                extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
                allowed = ", ".join(sorted(e.schema.get("properties", {})))
                for k in extra:
                    lines.append(f"config key '{_key(list(e.path) + [k])}': unknown key (allowed here: {allowed})")
            else:
                lines.append(f"config key '{_key(e.path)}': {e.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _fill_defaults(config, schema, schema)

    models = config["models"]
    for name, spec in models.items():
        _check_kind(spec, f"models.{name}")
        if spec.get("quantize", "none") != "none":
            if name in config["reward_models"]:
                raise ConfigError(f"config key 'models.{name}.quantize': {name!r} is a proxy RM, which is trained; "
                                  "quantize is for frozen models only")
            if spec.get("lora"):
                raise ConfigError(f"config key 'models.{name}.quantize': a LoRA policy's pi_init is its own weights "
                                  "with the adapter disabled, so there is no separate frozen copy to quantize")
    sft = config.get("sft")
    if sft and not sft.get("demonstrations"):
        hf = [p for p in config["policies"] if "hf" in models[p]]
        if hf:
            raise ConfigError(f"config key 'sft.demonstrations': policy {hf[0]!r} is an hf model; give it demonstrations "
                              "(a file), the corpus fallback is the tiny world's")
    learned = config["gold"].get("learned")
    if learned and "tiny" not in config["gold"]:
        raise ConfigError("config key 'gold.learned': its teacher is the hand-written gold of 'gold.tiny', which is missing")
    _check_kind(config["gold"], "gold")
    if learned:
        if learned["base"] not in models:
            raise ConfigError(f"config key 'gold.learned.base': model {learned['base']!r} is not defined under 'models'")
        if learned["policy"] not in config["policies"]:
            raise ConfigError(f"config key 'gold.learned.policy': {learned['policy']!r} is not one of policies")
    prompts = config["world"].get("prompts")
    if prompts:
        for key, n in (("bon.prompts", config["bon"]["prompts"]), ("rl.eval_prompts", config["rl"].get("eval_prompts", 0))):
            if n > prompts["heldout"]:
                raise ConfigError(f"config key '{key}': {n} exceeds world.prompts.heldout ({prompts['heldout']})")
    for axis in ("policies", "reward_models"):
        for i, name in enumerate(config[axis]):
            if name not in models:
                raise ConfigError(f"config key '{axis}[{i}]': model {name!r} is not defined under 'models'")
    for name, spec in models.items():
        if "tiny" in spec and spec["tiny"]["n_embd"] % spec["tiny"]["n_head"]:
            raise ConfigError(f"config key 'models.{name}.tiny': n_embd must be divisible by n_head")
    cmp = config["comparisons"]
    for i, n in enumerate(config["data_sizes"]):
        if n > cmp["train_pairs"]:
            raise ConfigError(
                f"config key 'data_sizes[{i}]': {n} exceeds comparisons.train_pairs ({cmp['train_pairs']})"
            )
    for i, n in enumerate(config["rl"].get("data_sizes", [])):
        if n not in config["data_sizes"]:
            raise ConfigError(f"config key 'rl.data_sizes[{i}]': {n} is not one of data_sizes")
    for i, n in enumerate(config["rl"].get("penalty_reward_models", [])):
        if n not in config["reward_models"]:
            raise ConfigError(f"config key 'rl.penalty_reward_models[{i}]': {n!r} is not one of reward_models")
    for i, n in enumerate(config["rl"].get("policies", [])):
        if n not in config["policies"]:
            raise ConfigError(f"config key 'rl.policies[{i}]': {n!r} is not one of policies")
    for n in config["rm_train"].get("lr_by_model", {}):
        if n not in config["reward_models"]:
            raise ConfigError(f"config key 'rm_train.lr_by_model.{n}': {n!r} is not one of reward_models")
    known_seeds = set().union(*cell_seeds(config).values())
    for i, s in enumerate(config["rl"].get("seeds", [])):
        if s not in known_seeds:
            raise ConfigError(f"config key 'rl.seeds[{i}]': {s} is not a seed of any grid cell")
    for j, sub in enumerate(config.get("subgrids", [])):
        for axis in AXES:
            for i, v in enumerate(sub.get(axis, [])):
                if v not in config[axis]:
                    raise ConfigError(f"config key 'subgrids[{j}].{axis}[{i}]': {v!r} is not one of {axis}")
    gold = config["gold"]
    for key in ("reference", "fluency_ngram"):  # null: unset (an overlay cannot delete a key)
        if "tiny" in gold and key in gold["tiny"] and gold["tiny"][key] is None:
            del gold["tiny"][key]
    if config["bon"]["gold_parts"] > config["bon"]["prompts"]:
        raise ConfigError(f"config key 'bon.gold_parts': {config['bon']['gold_parts']} parts of {config['bon']['prompts']} "
                          "prompts (bon.prompts) would leave a part without a prompt")
    if "tiny" in gold and gold["tiny"].get("count_over") and gold["tiny"].get("count_cap") is None:
        raise ConfigError("config key 'gold.tiny.count_over': needs gold.tiny.count_cap, the count past which it applies")
    if "tiny" in gold and "fluency" in gold["tiny"]["terms"]:
        if ("reference" in gold["tiny"]) == ("fluency_ngram" in gold["tiny"]):
            raise ConfigError("config key 'gold.tiny': the fluency term needs exactly one of 'reference' "
                              "(a tiny model) or 'fluency_ngram' (an n-gram order)")
    elif "tiny" in gold and "reference" in gold["tiny"]:
        raise ConfigError("config key 'gold.tiny.reference': only used by the 'fluency' term, which 'terms' lacks")
    if "tiny" in gold and "count" in gold["tiny"]["terms"] and not gold["tiny"].get("reward_chars"):
        raise ConfigError("config key 'gold.tiny.reward_chars': required by the 'count' term")
    if "tiny" in gold and "reference" in gold["tiny"]:
        ref = gold["tiny"]["reference"]
        if ref not in models:
            raise ConfigError(f"config key 'gold.tiny.reference': model {ref!r} is not defined under 'models'")
        if "tiny" not in models[ref]:
            raise ConfigError(f"config key 'gold.tiny.reference': {ref!r} must be a tiny model")
        gp = tiny_params(models[ref]["tiny"])
        for name in config["reward_models"]:
            if "tiny" in models[name] and tiny_params(models[name]["tiny"]) >= gp:
                raise ConfigError(
                    f"config key 'gold.tiny.reference': the gold ({ref}, ~{gp} params) must be larger than "
                    f"every proxy, but reward model {name!r} has ~{tiny_params(models[name]['tiny'])}"
                )
    total = max(config["world"]["prompt_chars"] + config["world"]["completion_tokens"], config["pretrain"]["seq_len"])
    for name, spec in models.items():
        if "tiny" in spec and spec["tiny"].get("n_positions", 128) < total:
            raise ConfigError(
                f"config key 'models.{name}.tiny.n_positions': shorter than prompt + completion "
                f"or pretrain.seq_len ({total})"
            )
    prompts = config["world"].get("prompts")
    if prompts and config["replicates"]["pool"]:  # each replicate's pool takes its own block of held-out prompts
        top = max(s for seeds in cell_seeds(config).values() for s in seeds)
        need = (top + 1) * config["bon"]["prompts"]
        if need > prompts["heldout"]:
            raise ConfigError(f"config key 'replicates.pool': seeds up to {top} need {need} held-out prompts "
                              f"(bon.prompts x {top + 1}), world.prompts.heldout is {prompts['heldout']}")
    return config


def canonical(obj) -> str:
    """A stable string for a nested structure: what Snakemake params compare across runs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def main(argv=None) -> int:
    """`python -m overopt.config CONFIG`: validate a config file and say what is wrong."""
    import sys

    path = (argv or sys.argv[1:])[0]
    try:
        validate(yaml.safe_load(Path(path).read_text()))
    except ConfigError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
