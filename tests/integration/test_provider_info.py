"""The package as Airflow sees it: listed as a provider, with the aporia connection type and its form."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

import aporia_provider
from tests.helpers import AirflowCli


def test_airflow_lists_the_provider(airflow_cli: AirflowCli) -> None:
    output = airflow_cli("providers", "list", "-o", "json").stdout
    # Airflow may print log lines before the JSON document.
    listed, _ = json.JSONDecoder().raw_decode(output[output.index('[{"package_name"') :])
    [ours] = [p for p in listed if p["package_name"] == "aporia-airflow-provider"]
    # The version lives in aporia_provider.__version__ only; the package metadata and provider info read it.
    assert ours["version"] == aporia_provider.__version__ == version("aporia-airflow-provider")


@pytest.mark.usefixtures("airflow_env")
def test_the_aporia_connection_type_and_its_form() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["aporia"]
    assert hook is not None and hook.hook_class_name == "aporia_provider.hooks.aporia.AporiaHook"
    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    assert widgets["extra__aporia__environment"].field["value"] == "production"
    assert widgets["extra__aporia__verify_ssl"].field["schema"]["type"] == "boolean"
    behaviour = manager.field_behaviours["aporia"]
    assert behaviour["relabeling"] == {"password": "API token", "schema": "Scheme"}
    assert behaviour["hidden_fields"] == ["login"]
