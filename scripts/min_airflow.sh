#!/usr/bin/env bash
# The provider as built, at its declared floors. The wheel `uv build` makes must hold exactly the files of
# aporia_provider/ (the product and every file it reads at run time); it is installed, not editable, into a second
# virtual environment, .venv-min, beside the floor of every runtime dependency (Airflow $MIN_AIRFLOW, the Amazon
# provider, PySpark 4.0.0, ...; each checked). There run the unit tier, from a copy outside the source tree so that
# the wheel is what it imports, then the example model, version and serving data set are created with the operators
# and `airflow dags test` runs the example sync DAG with every window through Spark against the local stack (which
# the main .venv runs), once per mode on a window of its own: local[*] in the task, a standalone cluster and a Spark
# Connect server (both of .venv-min's PySpark). After each, Aporia must hold every prediction and actual of the
# windows synced so far, and the sync's task log no WARNING or ERROR line.
#
#   scripts/min_airflow.sh            install (the venv once, from uv's cache; the wheel at every run) and test
#   scripts/min_airflow.sh compile    re-resolve ci/min-airflow-constraints.txt
#
# The constraints do what Airflow's own constraint file does for a release: Airflow's requirements have no upper
# bounds, so Airflow 3.1.0 beside today's libraries does not even import (structlog dropped what it uses). The
# provider's own dependencies resolve to their floors (uv's lowest-direct), every other package to its newest
# release on the day Airflow 3.1.0 was published (uv's --exclude-newer).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MIN_AIRFLOW=3.1.0
RELEASED=2025-09-26  # apache-airflow 3.1.0 reached PyPI on 2025-09-25
CONSTRAINTS=ci/min-airflow-constraints.txt
# What the unit tier needs besides the provider; wtforms lets Airflow 3.1 build the connection form.
TEST_PACKAGES="pytest>=8 responses>=0.25 wtforms>=3.1"
VENV=.venv-min
# The same wheel without its spark extra, as a worker that never runs Spark installs it.
NO_SPARK_VENV=.venv-nospark
UV=.venv/bin/uv
SYNC_TASK=sync_predictions_and_actuals

compile() {
    local inputs
    inputs=$(mktemp --suffix=.in)
    # shellcheck disable=SC2086
    printf '%s\n' "apache-airflow==$MIN_AIRFLOW" $TEST_PACKAGES >"$inputs"
    "$UV" pip compile --quiet --upgrade --python-version 3.11 --resolution lowest-direct --exclude-newer "$RELEASED" \
        pyproject.toml --extra openlineage --extra spark "$inputs" --no-header --no-annotate -o "$CONSTRAINTS"
    rm -f "$inputs"
    sed -i "1i # Airflow $MIN_AIRFLOW, the provider's floors, the packages of that day; regenerate: scripts/min_airflow.sh compile." \
        "$CONSTRAINTS"
}

# The venv is made once per pyproject.toml and constraints; the wheel is built and installed into it at every run.
install() {
    local stamp source wheel
    stamp="$VENV/.installed-$(cat pyproject.toml "$CONSTRAINTS" | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        rm -rf "$VENV"
        "$UV" venv --quiet --python python3 "$VENV"
    fi
    # Built from a copy of the files git has (or would add), as from a fresh clone: in place, setuptools would also
    # pack what earlier builds left in build/ (today's wheel passed this check only so).
    source=$(mktemp -d)
    git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$source"
    rm -rf "$VENV/dist"
    "$UV" build --quiet --wheel --out-dir "$VENV/dist" "$source"
    rm -rf "$source"
    wheel=$(echo "$VENV"/dist/*.whl)
    # shellcheck disable=SC2086
    "$UV" pip install --quiet --compile-bytecode --python "$VENV/bin/python" -c "$CONSTRAINTS" \
        --reinstall-package aporia-airflow-provider "apache-airflow==$MIN_AIRFLOW" "$wheel[openlineage,spark]" $TEST_PACKAGES
    if [ ! -f "$stamp" ]; then
        "$UV" cache prune --quiet  # as the Makefile does: the unused PySpark builds
        touch "$stamp"
    fi
    check_wheel "$wheel"
    check_floors
    install_without_spark "$wheel"
}

# A fresh venv each run (seconds from uv's cache): the wheel alone at the same floors, so its size is what a worker
# carries; Spark's packages must be absent.
install_without_spark() {
    rm -rf "$NO_SPARK_VENV"
    "$UV" venv --quiet --python python3 "$NO_SPARK_VENV"
    "$UV" pip install --quiet --compile-bytecode --python "$NO_SPARK_VENV/bin/python" -c "$CONSTRAINTS" \
        "apache-airflow==$MIN_AIRFLOW" "$1"
    (cd /tmp && "$OLDPWD/$NO_SPARK_VENV/bin/python" - "$OLDPWD/$NO_SPARK_VENV") <<'EOF'
import sys
from importlib import metadata
from pathlib import Path

from aporia_provider.exceptions import SyncInputError
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

installed = {d.metadata["Name"].lower() for d in metadata.distributions()}
spark = {"pyspark", "pyspark-client", "pandas", "apache-airflow-providers-apache-spark"} & installed
assert not spark, f"installed without the spark extra, yet {sorted(spark)} are there"
try:
    AporiaSyncOperator(task_id="sync", model_id="m", model_version="v1", query="SELECT 1", id_column="id",
                       timestamp_column="ts", spark_min_rows=0)
except SyncInputError as refused:
    assert "install the provider's spark extra" in str(refused), refused
else:
    sys.exit("spark_min_rows without PySpark was not refused at DAG parse")
size = sum(f.stat().st_size for f in Path(sys.argv[1]).rglob("*") if f.is_file() and not f.is_symlink())
print(f"Without the spark extra: no PySpark, pandas or Spark provider; spark_min_rows refused at DAG parse naming "
      f"the extra; the venv holds {size / 1e6:,.0f} MB.")
EOF
}

# The wheel holds aporia_provider/'s files, Python or not (templates, CSS, the log4j2 config), and nothing else.
check_wheel() {
    git ls-files --cached --others --exclude-standard aporia_provider | "$VENV/bin/python" -c '
import sys, zipfile
wheel = sys.argv[1]
names = {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}
tracked = set(sys.stdin.read().split())
if names != tracked:
    sys.exit(f"{wheel}: missing {sorted(tracked - names)}; not the product: {sorted(names - tracked)}")
print(f"{wheel}: the {len(names)} files of aporia_provider/, nothing else")
' "$1"
}

# Every runtime dependency of the provider is installed at its declared floor, and the wheel is what Python imports.
check_floors() {
    (cd /tmp && "$OLDPWD/$VENV/bin/python" - "$MIN_AIRFLOW") <<'EOF'
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

import aporia_provider

installed = []
for text in metadata.requires("aporia-airflow-provider") or []:
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": "spark"}):
        continue  # another extra's
    floor = next(Version(s.version) for s in requirement.specifier if s.operator == ">=")
    version = metadata.version(requirement.name)
    if Version(version) != floor:
        sys.exit(f"{requirement.name} {version} is installed, not its declared floor {floor}.")
    installed.append(f"{requirement.name} {version}")
assert "site-packages" in aporia_provider.__file__, aporia_provider.__file__
print(f"Airflow {sys.argv[1]}, each runtime dependency at its floor: {', '.join(installed)}")
EOF
}

# The unit tier against the installed wheel: run from a copy of the tests, the source tree is not on sys.path.
unit_tier() {
    local copy
    copy=$(mktemp -d)
    cp -r tests pyproject.toml "$copy"
    # The stand-ins' rules have unit tests too; their distribution is not installed here, their sources are read.
    (cd "$copy" && PYTHONPATH="$OLDPWD/aporia-local" "$OLDPWD/$VENV/bin/pytest" -q -p no:cacheprovider tests/unit)
    rm -rf "$copy"
}

# Spark's own parts (the Connect server, the standalone master and worker) run from this venv's PySpark, as a
# classic driver needs a cluster of its own release: the stand-ins' sources are imported by the venv's Python, so
# their Spark home and Python workers are the venv's (aporia-local's distribution would add its servers' packages).
min_spark() {
    PYTHONPATH="$ROOT/aporia-local" "$ROOT/$VENV/bin/python" "$@"
}

stop_spark() {
    local work=$1
    # The Connect server's pid file names its JVM (the Python that started it became the JVM).
    if [ -f "$work/spark-connect/pids/spark-connect.pid" ]; then
        kill "$(cat "$work/spark-connect/pids/spark-connect.pid")" 2>/dev/null || true
    fi
    wait  # until the Connect server and the cluster's starter have exited
    min_spark -c 'import sys; from pathlib import Path; from aporia_local.spark import StandaloneCluster
StandaloneCluster(Path(sys.argv[1])).stop()' "$work/spark-standalone"
}

failed() {
    tail -n 60 "$2"
    echo "Airflow $MIN_AIRFLOW: $1 failed (log above)." >&2
    exit 1
}

dags_test() {
    local work connect_port pyspark
    work=$(mktemp -d)
    pyspark=$("$VENV/bin/python" -c 'from importlib import metadata; print(metadata.version("pyspark"))')
    VERSIONS="Airflow $MIN_AIRFLOW, PySpark $pyspark"
    connect_port=$(.venv/bin/python -c 'from aporia_local.redshift import free_port; print(free_port())')
    # shellcheck disable=SC2064
    trap "stop_spark '$work'; '$ROOT/.venv/bin/aporia-local' down --dir '$work/stack' >/dev/null; rm -rf '$work'" EXIT
    # Both take longest to start: launched first, waited for when a mode needs them.
    min_spark -m aporia_local.cli serve-spark-connect --port "$connect_port" --dir "$work/spark-connect" \
        --driver-memory 1g >"$work/spark-connect.log" 2>&1 &
    min_spark - "$work/spark-standalone" >"$work/spark-standalone.json" 2>"$work/spark-standalone.log" <<'EOF' &
import json
import sys
from pathlib import Path

from aporia_local.spark import StandaloneCluster

cluster = StandaloneCluster(Path(sys.argv[1]))
cluster.start()
print(json.dumps(cluster.connection()))
EOF
    local cluster_starter=$!
    # The stack's Connect server is the one started above, not one of the main .venv's PySpark.
    .venv/bin/aporia-local up --detach --dir "$work/stack" --days 3 --rows-per-hour 12 \
        --spark-connect-host 127.0.0.1 --spark-connect-port "$connect_port" >"$work/up.out"
    # Detached, nobody is at the stack's terminal: `down` is the one way to stop it.
    [ "$(tail -n 1 "$work/up.out")" = 'The stack is up; stop it with `aporia-local down`.' ] ||
        failed "aporia-local up --detach's last line" "$work/up.out"
    # The example sync DAG unchanged, but every window through Spark, as large ones go (a cluster policy).
    mkdir -p "$work/airflow-home/config"
    cat >"$work/airflow-home/config/airflow_local_settings.py" <<EOF
from importlib.util import find_spec


def task_policy(task):
    if task.task_id == "$SYNC_TASK" and find_spec("pyspark") is not None:
        task.spark_min_rows = 0
EOF
    # Not the source tree: Python here, and Spark's Python workers, import the provider from the wheel.
    cd "$work"
    set -a
    # shellcheck disable=SC1091
    source "$work/stack/connections.env"
    AIRFLOW_HOME="$work/airflow-home"
    AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
    # Airflow 3.1's DAG processor and task runner put the bundle on sys.path, its `dags test` does not; the
    # example DAGs import their shared model from beside them.
    PYTHONPATH="$ROOT/dags"
    AIRFLOW__CORE__LOAD_EXAMPLES=False
    AIRFLOW__CORE__UNIT_TEST_MODE=True
    # The task's Spark driver binds to loopback, where the standalone cluster's executors reach it.
    SPARK_LOCAL_IP=127.0.0.1
    set +a
    # What the setup DAG does, by its operators on this Airflow, without a second DAG run.
    if ! "$ROOT/$VENV/bin/python" - >>"$work/setup.log" 2>&1 <<'SETUP'
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
        failed "creating the example model, version and serving data set" "$work/setup.log"
    fi
    "$ROOT/$VENV/bin/airflow" db migrate >>"$work/setup.log" 2>&1 || failed "\`airflow db migrate\`" "$work/setup.log"

    # Each mode syncs a window of its own (their reads, with the 15-minute lookback, do not overlap), so that
    # Aporia's count after each shows what that mode delivered.
    sync_through local "" 2026-11-22T09:00:00+00:00
    wait "$cluster_starter" || failed "starting the standalone cluster" "$work/spark-standalone.log"
    AIRFLOW_CONN_SPARK_STANDALONE=$(cat "$work/spark-standalone.json") \
        sync_through standalone spark_standalone 2026-11-22T11:00:00+00:00
    min_spark -m aporia_local.cli probe-spark-connect "sc://127.0.0.1:$connect_port" >>"$work/spark-connect.log" 2>&1 ||
        failed "starting the Spark Connect server" "$work/spark-connect.log"
    sync_through connect spark_connect_default 2026-11-22T13:00:00+00:00
    VERSIONS="Airflow $MIN_AIRFLOW" AIRFLOW_BIN="$ROOT/$NO_SPARK_VENV/bin/airflow" sync_through without-spark "" 2026-11-22T15:00:00+00:00
}

# `airflow dags test` of the sync DAG's run that ends at $3 through Spark in mode $1 (the trigger form's
# spark_conn_id $2), then the check of what it delivered and logged; called by dags_test, in its $work.
sync_through() {
    local mode=$1 conn_id=$2 window_end=$3 log started
    log="$work/$mode.log"
    started=$SECONDS
    if ! "${AIRFLOW_BIN:-$ROOT/$VENV/bin/airflow}" dags test aporia_redshift_sync "$window_end" \
        -c "{\"spark_conn_id\":\"$conn_id\"}" >"$log" 2>&1; then
        failed "\`airflow dags test\` ($mode)" "$log"
    fi
    SYNCED_WINDOWS="${SYNCED_WINDOWS:-} $window_end"
    (cd "$ROOT" && .venv/bin/python - "$work/stack" "$log" "$mode" $((SECONDS - started)) "$VERSIONS" "$SYNC_TASK" \
        $SYNCED_WINDOWS) <<'EOF'
"""Aporia holds every prediction and actual of the windows synced so far (with the DAG's 15-minute lookback),
once; this sync's task log went through Spark and has no WARNING or ERROR line."""
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import requests

from aporia_local.stack import LocalStack, StackSettings
from tests.helpers import LOUD

directory, log, mode, seconds, versions, task = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:7]
ends = [datetime.fromisoformat(end) for end in sys.argv[7:]]
stack = LocalStack(directory, StackSettings(**json.loads((directory / "settings.json").read_text())))
bounds = [(end - timedelta(hours=1, minutes=15), end) for end in ends]
within = " OR ".join(["({column} >= %s AND {column} < %s)"] * len(bounds))
with stack.master_connection() as connection:
    cursor = connection.cursor()
    cursor.execute(
        f"SELECT (SELECT COUNT(*) FROM model_predictions WHERE {within.format(column='prediction_timestamp')}),"
        f" (SELECT COUNT(*) FROM model_predictions WHERE ({within.format(column='actual_timestamp')})"
        " AND did_buy_insurance IS NOT NULL)",
        [bound for pair in bounds for bound in pair] * 2,
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
    sys.exit(f"{mode}: Aporia holds {stored}; the windows synced have {predictions} predictions, {actuals} actuals.")
# `airflow dags test` prints the task's log between its own start and end lines.
output = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text()).splitlines()
start = next(i for i, line in enumerate(output) if f"[DAG TEST] starting task_id={task}" in line)
end = next(i for i, line in enumerate(output) if f"[DAG TEST] end task task_id={task}" in line)
task_log = output[start : end + 1]
# Airflow 3.1's Task SDK warns at every fetch of a connection whose type holds a '_', as the Spark provider's
# spark_connect does; a later Airflow dropped the warning (apache/airflow#64345), a sync cannot avoid it.
airflow_own = [line for line in task_log if "Connection schemes (type: spark_connect) shall not contain '_'" in line]
loud = [line for line in task_log if LOUD.search(line) and line not in airflow_own]
path = "in this task" if mode == "without-spark" else "with Spark"
if loud or not any(path in line for line in task_log):
    sys.exit(f"{mode}: the task log must read {path} without a WARNING or ERROR line:\n" + "\n".join(task_log))
where = {
    "local": "local[*] in the task",
    "standalone": "a standalone cluster",
    "connect": "Spark Connect",
    "without-spark": "the task, installed without the spark extra",
}[mode]
print(f"{versions} on {where}: the sync DAG delivered all {predictions} predictions and {actuals} actuals so far,"
      f" once; its task log ({len(task_log)} lines) has no WARNING or ERROR line"
      + (f" but Airflow's own {len(airflow_own)} about the spark_connect type's '_'" if airflow_own else "")
      + f" ({seconds} s).")
EOF
}

if [ "${1:-}" = compile ]; then
    compile
    exit
fi
install
unit_tier
dags_test
