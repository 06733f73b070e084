"""`make demo`: the example DAGs against the local stack, then what Aporia received, window by window.

Starts the stack (seeded with four days of hourly predictions), runs `aporia_setup`, then
`aporia_redshift_sync` for three consecutive hourly windows with `airflow dags test`, and compares what
the local Aporia server holds with what was seeded in Redshift. It ends with where to see those windows in
Airflow's UI: `make ui` (`python scripts/demo.py ui`) serves Airflow's API server on the demo's metadata, with
the provider's sync view.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import requests

from aporia_local.cli import DEMO_START
from aporia_local.seed import SeedPlan, seed_predictions
from aporia_local.stack import LocalStack, StackSettings

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = ROOT / ".local-stack" / "demo"
AIRFLOW_HOME = ROOT / "airflow-home"
MODEL_ID, VERSION = "insurance-propensity", "v1"
FIRST_WINDOW = DEMO_START + timedelta(days=2)
# `make ui`: Airflow's API server for the demo's metadata, on loopback only.
UI_HOST, UI_PORT, UI_USER = "127.0.0.1", int(os.environ.get("UI_PORT", "8080")), "admin"
UI_URL = f"http://{UI_HOST}:{UI_PORT}"
PASSWORDS = AIRFLOW_HOME / "passwords.json"
WINDOWS = [(FIRST_WINDOW + timedelta(hours=h), FIRST_WINDOW + timedelta(hours=h + 1)) for h in range(3)]


def main() -> None:
    if sys.argv[1:] == ["ui"]:
        serve_ui()
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    stack = LocalStack(STACK_DIR, StackSettings.with_free_ports())
    try:
        step("Starting the local stack (Aporia, AWS on moto, Redshift stand-in, Spark Connect)", stack.start)
        plan = SeedPlan(DEMO_START, hours=4 * 24, rows_per_hour=12)
        step(f"Seeding {plan.rows} predictions into Redshift's model_predictions", lambda: seed(stack, plan))
        env = airflow_env(stack)
        step("Preparing Airflow's metadata database", lambda: airflow(env, "db", "migrate"))
        step("airflow dags test aporia_setup", lambda: airflow(env, "dags", "test", "aporia_setup"))
        for start, end in WINDOWS:
            # With an interval timetable, the run for [start, end) is the one that runs after `end`.
            label = f"airflow dags test aporia_redshift_sync  window [{start:%Y-%m-%d %H:%M}, {end:%H:%M})"
            step(label, partial(airflow, env, "dags", "test", "aporia_redshift_sync", end.isoformat()))
        report(stack)
    finally:
        stack.stop()
    print(
        "\nSee these windows in Airflow's UI, in the provider's sync view:\n"
        f"  make ui     serves Airflow's API server on {UI_URL} with the demo's metadata (Ctrl-C stops it)\n"
        f"  then open   {UI_URL}/aporia-sync/  (or Browse → Aporia syncs), signed in as {UI_USER} / {ui_password()}"
    )


def step(title: str, action: Callable[[], object]) -> None:
    print(f"• {title} ...", end=" ", flush=True)
    started = time.monotonic()
    action()
    print(f"done in {time.monotonic() - started:.1f} s", flush=True)


def seed(stack: LocalStack, plan: SeedPlan) -> None:
    with stack.master_connection() as connection:
        seed_predictions(connection, plan)


def airflow_env(stack: LocalStack) -> dict[str, str]:
    AIRFLOW_HOME.mkdir(exist_ok=True)
    return {
        **os.environ,
        **stack.airflow_env(),
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def ui_password() -> str:
    """The demo UI's admin password: made once, kept in airflow-home (Airflow's simple auth manager reads it)."""
    AIRFLOW_HOME.mkdir(exist_ok=True)
    if not PASSWORDS.exists():
        PASSWORDS.write_text(json.dumps({UI_USER: secrets.token_urlsafe(9)}))
        PASSWORDS.chmod(0o600)
    password: str = json.loads(PASSWORDS.read_text())[UI_USER]
    return password


def serve_ui() -> None:
    """Airflow's API server (UI, REST API, plugins) on loopback, reading the demo's metadata database."""
    if not (AIRFLOW_HOME / "airflow.db").exists():
        sys.exit("No demo metadata yet: run `make demo` first, then `make ui`.")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": UI_HOST,
        "AIRFLOW__API__PORT": str(UI_PORT),
        "AIRFLOW__API__BASE_URL": UI_URL,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(PASSWORDS),
    }
    print(
        f"The sync view: {UI_URL}/aporia-sync/ (or Browse → Aporia syncs), signed in as {UI_USER} / {ui_password()}.\n"
        "Starting Airflow's API server (about 20 s); Ctrl-C stops it.",
        flush=True,
    )
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    os.execve(airflow_bin, [airflow_bin, "api-server", "--host", UI_HOST, "--port", str(UI_PORT)], env)  # noqa: S606


def airflow(env: dict[str, str], *args: str) -> None:
    log = AIRFLOW_HOME / "demo.log"
    with open(log, "a") as out:
        out.write(f"\n$ airflow {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, stdout=out, stderr=out)
    if done.returncode != 0 or "state=failed" in log.read_text(errors="replace").rsplit("$ airflow", 1)[-1]:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        sys.exit("\nairflow " + " ".join(args) + " failed; the end of " + str(log) + ":\n" + "\n".join(tail))


def report(stack: LocalStack) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.settings.aporia_token}"
    base = stack.settings.aporia_url

    def get(path: str, **params: str | int) -> Any:
        response = session.get(base + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    models = get("/v1beta/models")
    versions = get(f"/v1beta/models/{MODEL_ID}/versions")
    datasets = get(f"/v1beta/models/{MODEL_ID}/versions/{VERSION}/datasets")
    stored = get("/local/fragments", model_id=MODEL_ID, model_version=VERSION, environment="production", limit=100_000)
    assert isinstance(models, list) and isinstance(versions, list) and isinstance(datasets, list)
    assert isinstance(stored, list)
    print("\nWhat the local Aporia server holds")
    for model in models:
        print(f"  model    {model['id']} ({model['name']})")
    for version in versions:
        schema = version["version_schema"]
        fields = ", ".join(f"{g}: {len(schema[g])}" for g in ("raw_inputs", "features", "predictions"))
        print(f"  version  {version['name']} {version['model_type']} ({fields})")
    for dataset in datasets:
        url = dataset["data_source"]["config"]["url"].split("?")[0]
        print(f"  dataset  {dataset['name']:<9} {dataset['data_source']['type']} {url} (IAM key in the URL, not shown)")

    with stack.master_connection() as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT prediction_id, prediction_timestamp, actual_timestamp FROM model_predictions "
            "WHERE prediction_timestamp < %s OR actual_timestamp < %s",
            (WINDOWS[-1][1], WINDOWS[-1][1]),
        )
        seeded = cursor.fetchall()
    with_actuals = {f["id"] for f in stored if f.get("actuals")}
    predictions = {f["id"] for f in stored if f.get("predictions")}

    print(
        f"\n  {'window (UTC)':<26}{'predictions seeded':>20}{'delivered':>11}{'actuals arrived':>17}{'delivered':>11}"
    )
    ok = True
    for start, end in WINDOWS:
        in_window = {row[0] for row in seeded if start <= row[1] < end}
        arrived = {row[0] for row in seeded if row[2] is not None and start <= row[2] < end}
        delivered = in_window & predictions
        actuals = arrived & with_actuals
        ok &= delivered == in_window and actuals == arrived
        label = f"[{start:%m-%d %H:%M}, {end:%H:%M})"
        print(f"  {label:<26}{len(in_window):>20}{len(delivered):>11}{len(arrived):>17}{len(actuals):>11}")
    print(
        "\nEvery seeded prediction and actual of the three windows was delivered exactly once."
        if ok
        else "\nSome seeded rows are missing in Aporia."
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
