"""The conda environment lists the same packages, with the same bounds, as pyproject.toml."""

import re
import tomllib

import yaml

from conftest import ROOT

CONDA_NAME = {"torch": "pytorch"}


def _split(req):
    m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", req)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "overopt.yaml").read_text())
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str))
    for req in deps:
        name, spec = _split(req)
        cname = CONDA_NAME.get(name, name)
        assert cname in conda, f"{cname} missing from envs/overopt.yaml"
        assert conda[cname] == spec, f"{cname}: pyproject says {spec!r}, envs/overopt.yaml says {conda[cname]!r}"
