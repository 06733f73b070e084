#!/usr/bin/env bash
# The official Aporia SDK in a venv of its own, for make bench's "SDK loop" (benchmarks/sdk_worker.py): its pins
# (certifi < 2023, numpy < 2) clash with Airflow 3, so it cannot live in .venv. Built once with uv (from its cache,
# a few seconds), rebuilt only when the requirements below change. psutil is the benchmark's own, for RSS and CPU.
#
#   benchmarks/sdk_venv.sh [VENV]        (default .venv-sdk; uv from .venv/bin, or $UV)
set -euo pipefail
venv=${1:-.venv-sdk}
uv=${UV:-.venv/bin/uv}
requirements=("aporia==2.19.0" "pandas<2" "redshift_connector" "psutil")
stamp="$venv/.installed"
if [[ -f $stamp && $(cat "$stamp") == "${requirements[*]}" ]]; then
    exit 0
fi
rm -rf "$venv"
"$uv" venv -q --python 3.11 "$venv"
"$uv" pip install -q --python "$venv/bin/python" "${requirements[@]}"
echo "${requirements[*]}" >"$stamp"
