"""Secrets sealed with HOOKRUN_SECRETS_KEY before they go on Kafka."""

import pytest
from cryptography.fernet import Fernet

from hookrun.config.sealing import Sealer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_sealed_secret_does_not_show_and_opens_with_the_key():
    key = Fernet.generate_key().decode()
    stored = Sealer(key).seal(SECRET)
    assert stored.startswith("sealed:") and "MfKQ9r8G" not in stored
    assert Sealer(key).unseal(stored) == SECRET


def test_without_a_key_secrets_are_stored_as_given():
    assert Sealer().seal(SECRET) == SECRET and Sealer().unseal(SECRET) == SECRET


def test_a_rotated_key_still_opens_what_the_old_one_sealed():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = Sealer(old).seal(SECRET)
    assert Sealer(f"{new},{old}").unseal(stored) == SECRET
    assert Sealer(f"{new},{old}").seal(SECRET) != stored


@pytest.mark.parametrize("keys", [None, Fernet.generate_key().decode()])
def test_a_secret_sealed_with_another_key_or_none_is_refused_without_its_value(keys):
    stored = Sealer(Fernet.generate_key().decode()).seal(SECRET)
    with pytest.raises(ValueError, match="HOOKRUN_SECRETS_KEY") as caught:
        Sealer(keys).unseal(stored)
    assert SECRET not in str(caught.value)


def test_a_bad_key_names_the_variable():
    with pytest.raises(ValueError, match="HOOKRUN_SECRETS_KEY"):
        Sealer("not-a-key")
