"""SecretBox with several keys, and which keys the settings give it."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from omnichat.settings import Settings
from storage.secrets import SecretBox

OLD, NEW, OTHER = (SecretBox.generate_key() for _ in range(3))


def settings(**values: str) -> Settings:
    """Settings from these values only (no environment file)."""
    return Settings(_env_file=None, **{k: SecretStr(v) for k, v in values.items()})  # type: ignore[call-arg]


def test_the_first_key_seals_and_every_key_opens() -> None:
    sealed_old = SecretBox(OLD).seal({"token": "t"})
    box = SecretBox([NEW, OLD])
    assert box.open(sealed_old) == {"token": "t"}
    assert not box.is_current(sealed_old)
    sealed_new = box.seal({"token": "u"})
    assert box.is_current(sealed_new) and SecretBox(NEW).open(sealed_new) == {"token": "u"}
    with pytest.raises(ValueError, match="any configured secret key"):
        SecretBox(OLD).open(sealed_new)


def test_rotate_moves_a_secret_to_the_first_key() -> None:
    sealed_old = SecretBox(OLD).seal({"app_secret": "s"})
    rotated = SecretBox([NEW, OLD]).rotate(sealed_old)
    assert SecretBox(NEW).open(rotated) == {"app_secret": "s"}
    with pytest.raises(ValueError):
        SecretBox(OLD).open(rotated)
    with pytest.raises(ValueError):
        SecretBox([OTHER]).rotate(sealed_old)


def test_a_box_needs_a_valid_key() -> None:
    with pytest.raises(ValueError):
        SecretBox([])
    with pytest.raises(ValueError):
        SecretBox("not a fernet key")


def test_which_keys_the_settings_give() -> None:
    assert settings(secret_key=OLD).fernet_keys == [OLD], "one key, as before"
    assert settings(secret_keys=f"{NEW}, {OLD}").fernet_keys == [NEW, OLD]
    # Both set: SECRET_KEYS first, SECRET_KEY one more decryption key unless already listed.
    assert settings(secret_keys=NEW, secret_key=OLD).fernet_keys == [NEW, OLD]
    assert settings(secret_keys=f"{NEW},{OLD}", secret_key=OLD).fernet_keys == [NEW, OLD]
    assert settings().fernet_keys == []
