#!/usr/bin/env bash
# The declared minimum Airflow, proved. A second virtual environment, .venv-min, holds Airflow $MIN_AIRFLOW with the
# Amazon provider and the other packages of that release; in it run the unit tier, then create the example model,
# version and serving data set with the operators and `airflow dags test` the example sync DAG against the local
# stack (which the main .venv runs); Aporia must then hold every prediction and actual of the synced window.
#
#   scripts/min_airflow.sh            install (once; uv caches the wheels) and test
#   scripts/min_airflow.sh compile    re-resolve ci/min-airflow-constraints.txt
#
# The constraints do what Airflow's own constraint file does for a release: Airflow's requirements have no upper
# bounds, so Airflow 3.1.0 beside today's libraries does not even import (structlog dropped what it uses). They
# are resolved as of the day Airflow 3.1.0 was published (uv's --exclude-newer), except for the packages the
# provider itself pins newer (PySpark 4.2 and what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_AIRFLOW=3.1.0
RELEASED=2025-09-26  # apache-airflow 3.1.0 reached PyPI on 2025-09-25
NEWER_FOR="pyspark pyspark-client grpcio grpcio-status googleapis-common-protos"
CONSTRAINTS=ci/min-airflow-constraints.txt
# What the unit tier needs besides the provider; wtforms lets Airflow 3.1 build the connection form.
TEST_PACKAGES="pytest responses wtforms"
VENV=.venv-min
UV=.venv/bin/uv
WINDOW_END=2026-11-22T13:00:00+00:00  # the sync DAG's run for [12:00, 13:00) of the third seeded day

compile() {
    local overrides=() inputs
    for package in $NEWER_FOR; do overrides+=(--exclude-newer-package "$package=2026-11-25"); done
    inputs=$(mktemp --suffix=.in)
    printf '%s\n' "apache-airflow==$MIN_AIRFLOW" $TEST_PACKAGES >"$inputs"
    "$UV" pip compile --quiet --python-version 3.11 --exclude-newer "$RELEASED" "${overrides[@]}" \
        pyproject.toml --extra openlineage "$inputs" --no-header --no-annotate -o "$CONSTRAINTS"
    rm -f "$inputs"
    sed -i "1i # Airflow $MIN_AIRFLOW and the packages of its release day; regenerate with scripts/min_airflow.sh compile." \
        "$CONSTRAINTS"
}

install() {
    local stamp
    stamp="$VENV/.installed-$(cat pyproject.toml "$CONSTRAINTS" | sha1sum | cut -c1-12)"
    [ -f "$stamp" ] && return
    rm -rf "$VENV"
    "$UV" venv --quiet --python python3 "$VENV"
    # shellcheck disable=SC2086
    "$UV" pip install --quiet --compile-bytecode --python "$VENV/bin/python" -c "$CONSTRAINTS" \
        "apache-airflow==$MIN_AIRFLOW" -e ".[openlineage]" $TEST_PACKAGES
    "$UV" cache prune --quiet  # as the Makefile does: the unused PySpark builds
    touch "$stamp"
}

dags_test() {
    local work log
    work=$(mktemp -d)
    log="$work/airflow.log"
    # shellcheck disable=SC2064
    trap ".venv/bin/aporia-local down --dir '$work/stack' >/dev/null; rm -rf '$work'" EXIT
    .venv/bin/aporia-local up --detach --dir "$work/stack" --days 3 --rows-per-hour 12 >/dev/null
    (
        set -a
        # shellcheck disable=SC1091
        source "$work/stack/connections.env"
        AIRFLOW_HOME="$work/airflow-home"
        AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
        # Airflow 3.1's DAG processor and task runner put the bundle on sys.path, its `dags test` does not; the
        # example DAGs import their shared model from beside them.
        PYTHONPATH="$PWD/dags"
        AIRFLOW__CORE__LOAD_EXAMPLES=False
        AIRFLOW__CORE__UNIT_TEST_MODE=True
        set +a
        # What the setup DAG does, by its operators on this Airflow, without a second DAG run.
        if ! "$VENV/bin/python" - >>"$log" 2>&1 <<'SETUP'
import sys

sys.path.insert(0, "dags")
import insurance_model as example

from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)

model = {"model_id": example.MODEL_ID}
AporiaCreateModelOperator(task_id="model", model_name=example.MODEL_NAME, **model).execute({})
version = {**model, "model_version": "v1"}
schema = {"features": example.FEATURES, "predictions": example.PREDICTIONS, "raw_inputs": example.RAW_INPUTS}
AporiaCreateModelVersionOperator(task_id="version", model_type="binary", **version, **schema).execute({})
columns = {"id_column": example.ID_COLUMN, "timestamp_column": example.TIMESTAMP_COLUMN, "labels": example.ACTUALS}
AporiaConnectServingOperator(task_id="serving", query=example.QUERY, **version, **columns).execute({})
SETUP
        then
            tail -n 60 "$log"
            echo "Airflow $MIN_AIRFLOW: creating the example model, version and serving data set failed (log above)." >&2
            exit 1
        fi
        # Spark in the task (the DAG's default is the stack's Connect server): the release-day protobuf of these
        # constraints is older than the one PySpark 4.2's Connect client was generated with.
        for command in "db migrate" "dags test aporia_redshift_sync $WINDOW_END -c {\"spark_conn_id\":\"\"}"; do
            # shellcheck disable=SC2086
            if ! "$VENV/bin/airflow" $command >>"$log" 2>&1; then
                tail -n 60 "$log"
                echo "Airflow $MIN_AIRFLOW: \`airflow $command\` failed (log above)." >&2
                exit 1
            fi
        done
    )
    .venv/bin/python - "$work/stack" "$WINDOW_END" "$MIN_AIRFLOW" <<'EOF'
"""Aporia holds every prediction of the synced window (with the DAG's 15-minute lookback) and every actual."""
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import requests

from aporia_local.stack import LocalStack, StackSettings

directory, end = Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2])
stack = LocalStack(directory, StackSettings(**json.loads((directory / "settings.json").read_text())))
with stack.master_connection() as connection:
    cursor = connection.cursor()
    bounds = (end - timedelta(hours=1, minutes=15), end)
    cursor.execute(
        "SELECT (SELECT COUNT(*) FROM model_predictions WHERE prediction_timestamp >= %s AND prediction_timestamp < %s),"
        " (SELECT COUNT(*) FROM model_predictions WHERE actual_timestamp >= %s AND actual_timestamp < %s"
        " AND did_buy_insurance IS NOT NULL)",
        bounds * 2,
    )
    predictions, actuals = cursor.fetchone()
answer = requests.get(
    f"{stack.settings.aporia_url}/local/fragments/count",
    params={"model_id": "insurance-propensity", "model_version": "v1", "environment": "production"},
    headers={"Authorization": f"Bearer {stack.settings.aporia_token}"},
    timeout=30,
)
answer.raise_for_status()
stored = answer.json()
if predictions == 0 or (stored["with_predictions"], stored["with_actuals"]) != (predictions, actuals):
    sys.exit(f"Aporia holds {stored}, but the window has {predictions} predictions and {actuals} actuals.")
print(f"Airflow {sys.argv[3]}: the sync DAG delivered the window's {predictions} predictions and {actuals} actuals.")
EOF
}

if [ "${1:-}" = compile ]; then
    compile
    exit
fi
install
"$VENV/bin/python" -c "import airflow, airflow.providers.amazon as amazon
print('Minimum Airflow', airflow.__version__, 'with the Amazon provider', amazon.__version__)"
# The stand-ins' rules have unit tests too; their distribution is not installed here, only its sources read.
PYTHONPATH=aporia-local "$VENV/bin/pytest" -q -p no:cacheprovider tests/unit
dags_test
