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
