"""Secrets audit: run the example DAGs, then search everything Airflow kept and printed for the secrets."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from tests.helpers import AirflowCli, AporiaProbe

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
# The shape of a temporary Redshift password the local AWS stand-in issues: "<expiry>.<signature>".
TEMPORARY_PASSWORD = re.compile(rb"\b\d{10}\.[0-9a-f]{40}\b")


def test_no_secret_reaches_logs_xcom_rendered_fields_or_output(
    stack: LocalStack, aporia: AporiaProbe, airflow_cli: AirflowCli, seeded: SeedPlan
) -> None:
    outputs = [
        airflow_cli("dags", "test", "aporia_setup"),
        airflow_cli("dags", "test", "aporia_redshift_sync", (seeded.start + timedelta(hours=6)).isoformat()),
    ]
    assert aporia.count("insurance-propensity", "v1")["total"] > 0, "the DAGs did not run"
    s = stack.settings
    secrets = {
        "Aporia token": s.aporia_token,
        "AWS secret key": s.aws_secret_access_key,
        "Redshift master password": s.master_password,
        "the stack's signing key": s.signing_key,
    }
    # Task logs, the metadata database (XCom, rendered template fields, serialized DAGs) and the CLI's output.
    home = Path(airflow_cli.env["AIRFLOW_HOME"])
    haystacks = {str(path): path.read_bytes() for path in home.rglob("*") if path.is_file()}
    for done in outputs:
        haystacks[f"output of {done.args[1:]}"] = (done.stdout + done.stderr).encode()
    assert any(b"Sync summary" in text for text in haystacks.values()), "the task logs were not searched"

    leaks = [
        f"{name} in {where}"
        for where, text in haystacks.items()
        for name, secret in secrets.items()
        if secret.encode() in text
    ]
    leaks += [
        f"a temporary Redshift password in {where}"
        for where, text in haystacks.items()
        if TEMPORARY_PASSWORD.search(text)
    ]
    assert leaks == []
    # The connect-dataset body is the one place the AWS key is meant to go: into Aporia.
    [dataset, *_] = aporia.get("/v1beta/models/insurance-propensity/versions/v1/datasets")
    assert s.aws_secret_access_key in dataset["data_source"]["config"]["url"].replace("%2F", "/").replace("%2B", "+")
