"""The README's command examples against what the code prints.

`overopt plan` on config/pythia.yaml needs no run, so its block must match to the character.
`overopt predict` reads a finished study: the README shows the default study's numbers, so here
the same commands run on the smoke study and are compared line by line with every number
masked (what is printed, in what order and layout; the numbers are the default run's)."""

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from overopt.config import ConfigError, validate

README = (ROOT / "README.md").read_text()
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?")


def _fenced():
    """The README's fenced blocks, as lists of lines."""
    blocks, current = [], None
    for line in README.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _blocks():
    """Each fenced block of the README that shows commands (`$ ...`) and their output, as
    [(command, output lines), ...]."""
    out = []
    for block in _fenced():
        runs = []
        for line in block:
            if line.startswith("$ "):
                runs.append((line[2:], []))
            elif runs:
                runs[-1][1].append(line)
        if runs:
            out.append(runs)
    return out


def _overopt(args: list[str]) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "overopt.cli", *args], capture_output=True, text=True, cwd=ROOT)
    return r.returncode, (r.stdout + r.stderr).rstrip("\n")


def _runs(name):
    return [run for block in _blocks() for run in block if shlex.split(run[0])[1] == name]


def test_the_plan_example_is_what_overopt_plan_prints():
    runs = _runs("plan")
    assert runs, "the README shows no `overopt plan` example"
    for cmd, shown in runs:
        rc, printed = _overopt(shlex.split(cmd)[1:])
        assert rc == 0 and printed.splitlines() == shown


def _masked(lines):
    """Numbers and the policy's name (the smoke study's policies have other names) masked."""
    return [re.sub(r"policy [\w.-]+,", "policy #,", NUMBER.sub("#", line)) for line in lines]


def test_the_predict_examples_have_the_layout_overopt_predict_prints(smoke_run, smoke_config):
    runs = _runs("predict")
    assert len(runs) >= 2, "the README shows no `overopt predict` examples"
    import pandas as pd

    sizes = pd.read_csv(smoke_run / "results" / "fits" / "bon.csv")["rm_params"]
    inside = (sizes.min() * sizes.max()) ** 0.5
    for cmd, shown in runs:
        args = shlex.split(cmd)[1:]
        # the same command on the smoke study: its results, one of its data sizes, and an RM size
        # inside its fitted range, or far outside it where the README's is outside the default's
        i = args.index("--rm-params")
        outside = float(args[i + 1]) > 1e6
        args[i + 1] = "1e12" if outside else f"{inside:g}"
        args[args.index("--data") + 1] = str(smoke_config["data_sizes"][-1])
        args += ["--results", str(smoke_run / "results")]
        rc, printed = _overopt(args)
        assert rc == (2 if outside else 0), printed
        assert _masked(printed.splitlines()) == _masked(shown), cmd


def test_the_config_error_example_is_what_validation_says(smoke_config):
    shown = "\n".join(next(b for b in _fenced() if b and b[0] == "invalid config:"))
    key = re.search(r"config key '([\w.]+)'", shown).group(1).split(".")
    cfg = yaml.safe_load(yaml.safe_dump(smoke_config))
    node = cfg
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = node.get("n_embd", 8)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == shown


def test_the_headline_findings_table_is_the_robustness_table():
    """The README's headline findings are docs/robustness.md's table (written by the robustness
    rule from the studies' findings.txt), both proxy architectures among its columns."""
    readme = (ROOT / "README.md").read_text()
    robustness = (ROOT / "docs" / "robustness.md").read_text()
    table = robustness[robustness.index("| finding |"):]
    assert table in readme
    head = table.splitlines()[0]
    assert "readout" in head and "paper" in head
