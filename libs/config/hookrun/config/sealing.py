"""Sealing the secrets hookrun keeps on Kafka (subscriptions made through the admin API).

With ``HOOKRUN_SECRETS_KEY`` set (one or more comma-separated Fernet keys, the first sealing),
a secret is stored as ``sealed:<Fernet token>``; without it, as given (docs/security.md).
"""

from __future__ import annotations

from typing import Annotated

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import AfterValidator, SecretStr

SEALED = "sealed:"


class Sealer:
    """Seals and unseals secrets with the keys of ``HOOKRUN_SECRETS_KEY`` (or none)."""

    def __init__(self, keys: str | None = None) -> None:
        """``keys``: comma-separated Fernet keys; the first seals, any of them unseals (so the
        key can be rotated). Raises ValueError when one is not a Fernet key."""
        parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
        try:
            self._fernet = MultiFernet([Fernet(k) for k in parts]) if parts else None
        except ValueError:
            raise ValueError(
                "HOOKRUN_SECRETS_KEY: each key must be 32 url-safe base64-encoded bytes"
                " (Fernet.generate_key())"
            ) from None

    @property
    def sealing(self) -> bool:
        """Whether secrets are sealed (a key is set)."""
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        """The secret as it is stored: sealed when a key is set."""
        if self._fernet is None:
            return secret
        return SEALED + self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, stored: str) -> str:
        """The secret a stored value holds; raises ValueError when it is sealed and no key
        here opens it (never with the value)."""
        if not stored.startswith(SEALED):
            return stored
        if self._fernet is None:
            raise ValueError("the secret is sealed and HOOKRUN_SECRETS_KEY is not set here")
        try:
            return self._fernet.decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken:
            raise ValueError("the secret is sealed with a key HOOKRUN_SECRETS_KEY lacks") from None


def _fernet_keys(value: SecretStr) -> SecretStr:
    Sealer(value.get_secret_value())  # raises ValueError naming the variable
    return value


#: The type of a service's ``hookrun_secrets_key`` setting: checked when the settings are read.
SecretsKey = Annotated[SecretStr, AfterValidator(_fernet_keys)]


def sealer_of(key: SecretStr | None) -> Sealer:
    """The Sealer of a ``hookrun_secrets_key`` setting (none: secrets stored as given)."""
    return Sealer(None if key is None else key.get_secret_value())
