"""The Kimi key can live in a Prefect Secret block instead of every worker's environment."""

from __future__ import annotations

import secrets

from flows.documents import with_secret_block_key
from kimidocs.run.settings import Settings


def test_key_comes_from_the_named_secret_block(prefect_api) -> None:
    from prefect.blocks.system import Secret

    key = "sk-test-" + secrets.token_hex(12)
    Secret(value=key).save("kimi-key-test", overwrite=True)
    settings = Settings(KIMIDOCS_PREFECT_SECRET_BLOCK="kimi-key-test", _env_file=None)
    assert settings.api_key_value() is None
    resolved = with_secret_block_key(settings)
    assert resolved.api_key_value() == key
    assert key not in repr(resolved) and key not in str(resolved)  # SecretStr stays masked


def test_environment_key_wins_and_no_block_means_no_lookup() -> None:
    env = Settings(KIMI_API_KEY="sk-from-env", KIMIDOCS_PREFECT_SECRET_BLOCK="does-not-exist", _env_file=None)
    assert with_secret_block_key(env).api_key_value() == "sk-from-env"  # no server call made
    bare = Settings(_env_file=None)
    assert with_secret_block_key(bare) is bare
