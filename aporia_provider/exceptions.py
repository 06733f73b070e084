"""The provider's errors, and the one split that matters to Airflow.

- ``InputError`` and its kinds: the request cannot succeed as given (a schema, an argument, a data source, the
  query, rows the policy refuses). Running it again fails the same way, so the operators raise it as
  ``AirflowFailException``: no retry, one sentence naming the field and the fix.
- ``TransientError``: Redshift, Spark or Aporia failed mid-sync in a way a later try can fix. It reaches Airflow as
  it is, and Airflow retries it while tries remain; delivery is idempotent, so a retry duplicates nothing.
- ``AporiaError``: a call to Aporia failed. Airflow retries it: Aporia may be down for a while, and a wrong token or
  host is fixed in the connection, not the DAG (the message says which).

One rule for configuration in every hook (Aporia, Redshift, Spark): a connection that is missing, or lacks what the
hook needs (a host, a token, keys, an extra), raises ``AirflowFailException``: a retry would read the same
connection, so the sentence says what to set, and clearing the task runs it again. What a service answers (Aporia,
AWS) is not configuration, and stays retried.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the argument and the fix; not retried."""


class SchemaError(InputError):
    """A schema given by the user is not one Aporia accepts."""


class DataSourceError(InputError):
    """A data source is not one Aporia can connect to."""


class SyncInputError(InputError):
    """The sync was asked for something it cannot do; the message names the argument and the fix."""


class InvalidRowsError(SyncInputError):
    """Rows in the window do not fit the version schema and the policy is to fail."""


class SyncRefused(SyncInputError):
    """Redshift or Spark refused the sync as configured; running it again would fail the same way."""


class TransientError(RuntimeError):
    """A failure a later try can fix; Airflow retries it."""


class SyncFailed(TransientError):
    """Redshift, Spark or Aporia failed mid-sync in a way a re-run can fix; delivery is idempotent."""


class SyncStopped(SyncFailed):
    """Someone, or Airflow, stopped the task mid-sync (on_kill); the sentence says what a re-run does."""

    def __init__(self, how_far: str, subject: str) -> None:
        super().__init__(
            f"Stopped {how_far} of {subject}: the task was killed (a person marked or cleared it, or Airflow stopped "
            "it: a timeout, a shutdown); a re-run sends the window again, nothing twice (delivery is idempotent)."
        )


class AporiaError(Exception):
    """A call to Aporia failed; the message names the call and Aporia's reason."""


class RetryableCall(Exception):
    """A transient failure of one HTTP call (connection error, timeout, 429, 5xx): the client tries again."""
