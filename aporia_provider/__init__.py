"""Apache Airflow provider for monitoring Redshift-hosted models in Aporia."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "aporia-airflow-provider",
        "name": "Aporia",
        "description": "Register model versions in Aporia and sync predictions and actuals from Redshift.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "aporia", "hook-class-name": "aporia_provider.hooks.aporia.AporiaHook"}
        ],
        "hooks": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.hooks.aporia"]}],
        "operators": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.operators.aporia"]}],
        "sensors": [{"integration-name": "Aporia", "python-modules": ["aporia_provider.sensors.aporia"]}],
    }
