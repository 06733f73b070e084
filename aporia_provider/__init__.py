"""Apache Airflow provider for monitoring Redshift-hosted models in Aporia."""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "aporia-airflow-provider",
        "name": "Aporia",
        "description": "Register model versions in Aporia and sync predictions and actuals from Redshift.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "aporia",
                "hook-class-name": "aporia_provider.hooks.aporia.AporiaHook",
                "hook-name": "Aporia",
                # Declarative form fields (Airflow >= 3.2 reads these without importing the hook).
                "conn-fields": {
                    "environment": {
                        "label": "Environment",
                        "description": "The Aporia environment the data belongs to.",
                        "schema": {"type": "string", "default": "production"},
                    },
                    "verify_ssl": {
                        "label": "Verify SSL",
                        "description": "Verify Aporia's TLS certificate.",
                        "schema": {"type": "boolean", "default": True},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "How long to wait for any one call to Aporia.",
                        "schema": {"type": "number", "default": 60},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login"],
                    "relabeling": {"password": "API token", "schema": "Scheme"},
                    "placeholders": {"host": "app.aporia.com", "port": "443", "schema": "https"},
                },
            }
        ],
        "hooks": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.hooks.aporia"]}],
        "operators": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.operators.aporia"]}],
        "sensors": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.sensors.aporia"]}],
        "triggers": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.triggers.aporia"]}],
        "extra-links": ["aporia_provider.links.aporia.AporiaModelVersionLink"],
        "asset-uris": [
            {
                "schemes": ["aporia"],
                "handler": "aporia_provider.assets.aporia.sanitize_uri",
                "factory": "aporia_provider.assets.aporia.create_asset",
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Amazon Redshift",
                "target-integration-name": "Aporia",
                "python-module": "aporia_provider.transfers.redshift_to_aporia",
            }
        ],
    }
