"""One Settings object: environment, `.env`, defaults. Nothing else reads os.environ for config."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.moonshot.cn/v1"
INTERNATIONAL_BASE_URL = "https://api.moonshot.ai/v1"


class Settings(BaseSettings):
    """Configuration of a kimidocs process.

    The API key is a `SecretStr`: its repr is masked, so printing settings never leaks it.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    kimi_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KIMI_API_KEY"))
    kimi_base_url: str = Field(default=DEFAULT_BASE_URL, validation_alias=AliasChoices("KIMI_BASE_URL"))
    kimi_model: str = Field(default="kimi-k2.5", validation_alias=AliasChoices("KIMI_MODEL"))
    db: Path = Field(default=Path("data/kimidocs.duckdb"), validation_alias=AliasChoices("KIMIDOCS_DB"))
    tier: str = Field(default="tier1", validation_alias=AliasChoices("KIMIDOCS_TIER"))
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, validation_alias=AliasChoices("KIMIDOCS_MAX_FILE_BYTES")
    )
    max_pages: int = Field(default=5_000, validation_alias=AliasChoices("KIMIDOCS_MAX_PAGES"))
    extract_timeout_s: float = Field(
        default=300.0, validation_alias=AliasChoices("KIMIDOCS_EXTRACT_TIMEOUT_S")
    )
    # Address-space cap of each extraction worker: a ZIP or Flate bomb ends as TooLarge, not in swap.
    extract_max_memory_bytes: int = Field(
        default=2 * 1024**3,
        ge=256 * 1024**2,
        validation_alias=AliasChoices("KIMIDOCS_EXTRACT_MAX_MEMORY_BYTES"),
    )
    request_timeout_s: float = Field(
        default=300.0, validation_alias=AliasChoices("KIMIDOCS_REQUEST_TIMEOUT_S")
    )
    max_retries: int = Field(default=6, validation_alias=AliasChoices("KIMIDOCS_MAX_RETRIES"))
    allow_emulator: bool = Field(default=False, validation_alias=AliasChoices("KIMIDOCS_ALLOW_EMULATOR"))
    shared_limits: bool = Field(default=True, validation_alias=AliasChoices("KIMIDOCS_SHARED_LIMITS"))
    prefect_secret_block: str | None = Field(
        default=None, validation_alias=AliasChoices("KIMIDOCS_PREFECT_SECRET_BLOCK")
    )

    def api_key_value(self) -> str | None:
        """The key in clear, for the Authorization header only."""
        return self.kimi_api_key.get_secret_value() if self.kimi_api_key else None


def load_settings(**overrides: object) -> Settings:
    """Settings from env and `.env`, with explicit overrides (CLI flags, flow parameters) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
