"""What moved into the Task SDK after Airflow 3.1 (exceptions, conf, Stats), imported from where the running one has it.

Airflow 3.2 moved the task exceptions and `conf` into the Task SDK (`airflow.sdk`); 3.1 has them in
`airflow.exceptions` and `airflow.configuration`. Airflow's metrics (`Stats`) moved into the Task SDK too
(`airflow.sdk.observability.stats`, where 3.3's task runner configures them; `airflow.stats` is then a deprecated
shim). The provider supports both, so everything it needs from those places comes from here.
"""

from __future__ import annotations

try:  # Airflow >= 3.2
    from airflow.sdk import conf
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[assignment]
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]

try:  # the Task SDK's metrics
    from airflow.sdk.observability.stats import Stats
except ImportError:  # Airflow 3.1
    from airflow.stats import Stats

__all__ = ["AirflowException", "AirflowFailException", "Stats", "conf"]
