"""The provider as Airflow discovers it, and the product's independence from the local stand-ins."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

import aporia_provider
from aporia_provider import get_provider_info
from aporia_provider.hooks.aporia import AporiaHook


def modules_named(info: dict[str, Any]) -> list[str]:
    named = [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    return named + [entry["python-module"] for entry in info["transfers"]]


def test_provider_info_keys() -> None:
    info = get_provider_info()
    assert set(info) == {
        "package-name",
        "name",
        "description",
        "versions",
        "connection-types",
        "hooks",
        "operators",
        "sensors",
        "triggers",
        "transfers",
        "extra-links",
        "asset-uris",
    }
    assert info["package-name"] == "aporia-airflow-provider"
    assert info["name"] == "Aporia"
    assert info["versions"] == [aporia_provider.__version__]


def test_the_version_is_the_installed_one() -> None:
    assert version("aporia-airflow-provider") == aporia_provider.__version__


def test_the_entry_point_names_get_provider_info() -> None:
    [entry] = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("aporia_provider")]
    assert entry.value == "aporia_provider:get_provider_info"
    assert entry.load() is get_provider_info


def test_the_aporia_connection_type() -> None:
    [connection_type] = get_provider_info()["connection-types"]
    assert connection_type["connection-type"] == AporiaHook.conn_type == "aporia"
    assert connection_type["hook-name"] == AporiaHook.hook_name
    module_name, _, class_name = connection_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is AporiaHook
    assert connection_type["ui-field-behaviour"] == {
        "hidden-fields": ["login"],
        "relabeling": {"password": "API token", "schema": "Scheme"},
        "placeholders": {"host": "app.aporia.com", "port": "443", "schema": "https"},
    }


def test_the_form_defaults_are_the_hooks_defaults() -> None:
    [connection_type] = get_provider_info()["connection-types"]
    fields = connection_type["conn-fields"]
    assert set(fields) == {"environment", "verify_ssl", "timeout"}
    assert fields["environment"]["schema"] == {"type": "string", "default": "production"}
    assert fields["verify_ssl"]["schema"] == {"type": "boolean", "default": True}
    assert fields["timeout"]["schema"] == {"type": "number", "default": AporiaHook().timeout}


def test_every_named_module_imports() -> None:
    info = get_provider_info()
    named = modules_named(info)
    assert named == [
        "aporia_provider.hooks.aporia",
        "aporia_provider.operators.aporia",
        "aporia_provider.sensors.aporia",
        "aporia_provider.triggers.aporia",
        "aporia_provider.transfers.redshift_to_aporia",
    ]
    for module in named:
        assert importlib.import_module(module).__name__ == module
    [transfer] = info["transfers"]
    assert (transfer["source-integration-name"], transfer["target-integration-name"]) == ("Amazon Redshift", "Aporia")


def test_the_product_never_imports_the_local_stand_ins() -> None:
    modules = [
        *modules_named(get_provider_info()),
        "aporia_provider.hooks.redshift",
        "aporia_provider.operators.base",
        "aporia_provider.extraction.run",
        "aporia_provider.extraction.in_spark",
        "aporia_provider.extraction.in_task",
        "aporia_provider.extraction.rulebook",
        "aporia_provider.redshift",
        "aporia_provider.client",
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('aporia_local'))\n"
        "assert not leaked, leaked\n"
        "print('clean')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("clean")


def test_nothing_in_the_product_imports_the_sync_view() -> None:
    """The view is the outcome's consumer: the operator, the metrics and the engine name it through
    aporia_provider.sync.outcome, never through the UI plugin."""
    import ast

    package = Path(aporia_provider.__file__).parent
    importers = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(package / "plugins"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name.startswith("aporia_provider.plugins") for name in names):
                importers.append(str(path.relative_to(package)))
    assert importers == []


def test_the_connection_form_as_the_ui_receives_it() -> None:
    """What the UI's connection form gets, on every supported Airflow: 3.2+ reads `conn-fields` from the provider
    info, 3.1 calls the hook's get_connection_form_widgets / get_ui_field_behaviour (built from the same info)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    [aporia] = [hook for hook in HookMetaService.hook_meta_data() if hook.connection_type == "aporia"]
    assert aporia.hook_class_name == "aporia_provider.hooks.aporia.AporiaHook"
    standard = aporia.standard_fields
    assert standard is not None
    assert standard.login is not None and standard.login.hidden
    assert standard.password is not None and standard.password.title == "API token"
    assert standard.url_schema is not None and (standard.url_schema.title, standard.url_schema.placeholder) == (
        "Scheme",
        "https",
    )
    assert standard.host is not None and standard.host.placeholder == "app.aporia.com"
    extra = aporia.extra_fields or {}
    assert {name: field["value"] for name, field in extra.items()} == {
        "environment": "production",
        "verify_ssl": True,
        "timeout": AporiaHook().timeout,
    }
    assert extra["environment"]["schema"]["title"] == "Environment"
    assert extra["verify_ssl"]["description"] == "Verify Aporia's TLS certificate."
    types = {name: field["schema"]["type"] for name, field in extra.items()}
    assert "boolean" in types["verify_ssl"] and "string" in types["environment"]


def test_every_extra_link_is_registered_and_imports() -> None:
    from aporia_provider.links.aporia import AporiaModelVersionLink

    [path] = get_provider_info()["extra-links"]
    module_name, _, class_name = path.rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is AporiaModelVersionLink
