#!/usr/bin/env bash
# Snakemake runs this once inside the new environment: install the overopt package of this
# checkout (the environment file holds its dependencies, conda's channels cannot hold it).
set -euo pipefail
pip install --no-deps -e "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
