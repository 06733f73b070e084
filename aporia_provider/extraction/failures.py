"""Warehouse, Spark and Aporia failures as one sentence, sorted into those a re-run can fix and those it cannot.

Each sentence opens with the cause (Airflow's log viewer does not wrap: the first ~100 characters are what an
on-call engineer sees), then what the sync was doing and for which model version, then the fix where one is known.
Works the same for classic sessions (the JVM's throwable chain) and Spark Connect (the server's message).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aporia_provider.exceptions import AporiaError, SyncFailed, SyncInputError, SyncRefused

if TYPE_CHECKING:
    from aporia_provider.extraction.warehouse import Warehouse

_PYTHON_ERROR_LINE = re.compile(r"^[\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)
_JAVA_CAUSE = re.compile(r"((?:[a-z]\w*\.)+[A-Z]\w*(?:Exception|Error)): ?([^\n]*)")
_MISSING_DRIVER = re.compile(r"ClassNotFoundException: ([\w.]+)|No suitable driver")


@contextmanager
def failures_of(warehouse: Warehouse, stage: str, subject: str, argument: str) -> Iterator[None]:
    """Turn a warehouse, Spark or Aporia failure in `stage` into SyncRefused (naming `argument`) or SyncFailed."""
    try:
        yield
    except (SyncInputError, SyncFailed):
        raise
    except Exception as exc:
        failure = _sorted(exc, warehouse, stage, subject, argument)
        if failure is None:
            raise
        raise failure from None


def _sorted(
    exc: Exception, warehouse: Warehouse, stage: str, subject: str, argument: str
) -> SyncFailed | SyncRefused | None:
    """SyncFailed or SyncRefused for a failure this module knows, else None. Spark is only looked at when already
    imported: a sync that never started Spark does not load it to sort a failure."""
    if isinstance(exc, AporiaError):
        return transient(str(exc), stage, subject)
    driver = warehouse.driver_failure(exc)
    if driver is not None:
        refused, reason = driver
        if refused:
            return _refused(warehouse, subject, argument, reason)
        return transient(reason, stage, subject)
    if isinstance(exc, OSError):  # a socket error or timeout
        reason = _clean(str(exc)) or type(exc).__name__
        return transient(reason, stage, subject)
    if "pyspark" in sys.modules:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import PySparkException

        if isinstance(exc, PySparkException | Py4JJavaError):
            return classify(exc, warehouse, stage, subject, argument)
    return None


def _refused(warehouse: Warehouse, subject: str, argument: str, reason: str) -> SyncRefused:
    return SyncRefused(
        f"{warehouse.name} refused the {argument}: {_clean(reason)}; fix {argument} (syncing {subject})."
    )


def transient(cause: str, stage: str, subject: str) -> SyncFailed:
    """A failure a later try can fix: its cause, then what the sync was doing. Delivery is idempotent by id, so the
    try that follows duplicates nothing; whether Airflow retries is the operator's to say."""
    return SyncFailed(f"{_clean(cause)} (while {stage} for {subject}).")


def classify(exc: Exception, warehouse: Warehouse, stage: str, subject: str, argument: str) -> SyncFailed | SyncRefused:
    causes = _causes(exc)
    text = "\n".join(f"{name}: {message}" for name, message, _ in causes) or str(exc)
    states = [state for _, _, state in causes if state]
    if isinstance(exc, _python_exception_types()):
        reasons = _PYTHON_ERROR_LINE.findall(str(exc))
        reason = reasons[-1] if reasons else str(exc).splitlines()[0]
        return transient(reason, stage, subject)
    driver = _MISSING_DRIVER.search(text)
    if driver:
        name = driver.group(1) or "for the JDBC URL"
        return SyncRefused(
            f"The JDBC driver {name} is not on Spark's class path (while {stage} for {subject}); add its jar with "
            "spark_conf {'spark.jars': '/path/driver.jar'} or spark.jars.packages, or install it on the cluster."
        )
    server_error = warehouse.server_error(text)
    verdict = warehouse.sql_state_refused(states[0]) if states else None
    if verdict is False:
        return transient(_first_reason(causes, text), stage, subject)
    if verdict or (server_error and not _looks_transient(text)):
        return _refused(warehouse, subject, argument, server_error or _first_reason(causes, text))
    if _is_analysis_error(exc, text):
        return SyncRefused(
            f"Spark could not plan the read: {_clean(_analysis_reason(exc))}; fix select_expr, the column mappings "
            f"or the query (syncing {subject})."
        )
    return transient(_first_reason(causes, text), stage, subject)


_TRANSIENT_WORDS = ("connection", "i/o error", "timed out", "terminating", "reset", "refused", "password")


def _looks_transient(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _TRANSIENT_WORDS) and "syntax" not in lowered


def _python_exception_types() -> tuple[type[Exception], ...]:
    from pyspark.errors.exceptions.captured import PythonException

    found: list[type[Exception]] = [PythonException]
    try:
        from pyspark.errors.exceptions.connect import PythonException as ConnectPythonException

        found.append(ConnectPythonException)
    except ImportError:
        pass
    return tuple(found)


def _is_analysis_error(exc: Exception, text: str) -> bool:
    from pyspark.errors import AnalysisException, ParseException

    return isinstance(exc, AnalysisException | ParseException) or "AnalysisException" in text


def _analysis_reason(exc: Exception) -> str:
    get_message = getattr(exc, "getMessage", None)
    message = str(get_message() if callable(get_message) else exc)
    return message.split("\n", 1)[0]


def _causes(exc: Exception) -> list[tuple[str, str, str | None]]:
    """(class, message, SQLSTATE) of each cause: the JVM's chain on classic, the parsed message on Connect."""
    throwable: Any = getattr(exc, "_origin", None) or getattr(exc, "java_exception", None)
    causes: list[tuple[str, str, str | None]] = []
    while throwable is not None:
        get_state = getattr(throwable, "getSQLState", None)
        state = None
        try:
            state = get_state() if callable(get_state) else None
        except Exception:  # noqa: S110 - a throwable without a SQL state
            pass
        causes.append((throwable.getClass().getName(), str(throwable.getMessage() or ""), state))
        throwable = throwable.getCause()
    if not causes:
        causes = [(name, message, None) for name, message in _JAVA_CAUSE.findall(str(exc))]
        sql_state = getattr(exc, "getSqlState", None)
        state = sql_state() if callable(sql_state) else None
        if state and causes:
            causes[0] = (causes[0][0], causes[0][1], state)
    return causes


def _first_reason(causes: list[tuple[str, str, str | None]], text: str) -> str:
    """The first cause outside Spark itself (the driver's or the network's own words)."""
    for name, message, _ in causes:
        if not name.startswith("org.apache.spark") and message:
            return message
    return causes[0][1] if causes and causes[0][1] else text.splitlines()[0]


def _clean(reason: str) -> str:
    return " ".join(reason.split()).rstrip(".")
