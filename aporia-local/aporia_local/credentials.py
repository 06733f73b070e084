"""Temporary database passwords shared by the local AWS stand-in and the Redshift stand-in.

Real Redshift checks GetClusterCredentials passwords against IAM; locally the AWS stand-in signs
the password it issues with a key that only the stack holds, and the Redshift stand-in checks the
signature and the expiry, so expired or forged credentials are refused just as Redshift does.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone


def issue_password(signing_key: str, db_user: str, expires_at: datetime) -> str:
    expiry = int(expires_at.timestamp())
    return f"{expiry}.{_signature(signing_key, db_user, expiry)}"


def password_is_valid(signing_key: str, db_user: str, password: str, now: datetime | None = None) -> bool:
    expiry_text, _, signature = password.partition(".")
    if not expiry_text.isdigit():
        return False
    expiry = int(expiry_text)
    current = (now or datetime.now(timezone.utc)).timestamp()
    return expiry > current and hmac.compare_digest(signature, _signature(signing_key, db_user, expiry))


def _signature(signing_key: str, db_user: str, expiry: int) -> str:
    message = f"{db_user}\n{expiry}".encode()
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()[:40]
