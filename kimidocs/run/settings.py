"""One Settings object: environment, `.env`, defaults. Nothing else reads os.environ for config."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kimidocs.core.models import DEFAULT_MODEL, ModelInfo, ModelsFileError, get_model, load_models_file
from kimidocs.core.schedule import DEFAULT_MIN_SAVING_USD
from kimidocs.kimi.keys import CHINA_BASE_URL, INTERNATIONAL_BASE_URL, InvalidKeyFormat, clean_api_key

DEFAULT_BASE_URL = CHINA_BASE_URL
_DAY_S = 86_400.0  # timeouts and intervals are bounded: `inf` or 1e300 would overflow where they are used
_WEEK_S = 7 * _DAY_S


class Settings(BaseSettings):
    """Configuration of a kimidocs process.

    The API key is a `SecretStr`: its repr is masked, so printing settings never leaks it. Every value is
    checked here, once, so a bad one is one clear line at start-up rather than every file failing later;
    `hide_input_in_errors` keeps pydantic from echoing the offending value (it may be the key).
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    kimi_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KIMI_API_KEY"))
    kimi_base_url: str = Field(default=DEFAULT_BASE_URL, validation_alias=AliasChoices("KIMI_BASE_URL"))
    # None: the client's default (core/models.DEFAULT_MODEL), which a run may replace by its successor when
    # the account no longer offers it; a model named here (or by --model) is never replaced.
    kimi_model: str | None = Field(default=None, validation_alias=AliasChoices("KIMI_MODEL"))
    # A DuckDB file, or a DuckLake as DuckDB's ATTACH string: 'ducklake:postgres:dbname=... host=...'.
    db: Path = Field(default=Path("data/kimidocs.duckdb"), validation_alias=AliasChoices("KIMIDOCS_DB"))
    # Where a new DuckLake puts its data files (a shared folder, or s3://...); the lake remembers it.
    lake_data_path: str | None = Field(default=None, validation_alias=AliasChoices("KIMIDOCS_LAKE_DATA_PATH"))
    tier: str = Field(default="tier1", validation_alias=AliasChoices("KIMIDOCS_TIER"))
    # Batch mode (kimidocs/run/batch_mode.py): first poll interval and how long one run waits for a batch.
    batch_poll_s: float = Field(
        default=30.0,
        gt=0,
        le=_DAY_S,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_BATCH_POLL_S"),
    )
    batch_timeout_s: float = Field(
        default=26 * 3600.0,
        gt=0,
        le=_WEEK_S,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_BATCH_TIMEOUT_S"),
    )
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, gt=0, validation_alias=AliasChoices("KIMIDOCS_MAX_FILE_BYTES")
    )
    max_pages: int = Field(default=5_000, gt=0, validation_alias=AliasChoices("KIMIDOCS_MAX_PAGES"))
    extract_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=_DAY_S,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_EXTRACT_TIMEOUT_S"),
    )
    # Address space (MiB) of all extraction workers together, each capped at its share (at least 256):
    # a ZIP or Flate bomb ends as TooLarge, not in swap, and the process tree does not grow with cores.
    extract_memory_mb: int = Field(
        default=512, ge=256, validation_alias=AliasChoices("KIMIDOCS_EXTRACT_MEMORY_MB")
    )
    # Which library reads PDF text: auto (pdfium, pypdf where pdfium reads worse), pdfium or pypdf.
    pdf_engine: str = Field(default="auto", validation_alias=AliasChoices("KIMIDOCS_PDF_ENGINE"))
    request_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=_DAY_S,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_REQUEST_TIMEOUT_S"),
    )
    max_retries: int = Field(default=6, ge=0, le=20, validation_alias=AliasChoices("KIMIDOCS_MAX_RETRIES"))
    allow_emulator: bool = Field(default=False, validation_alias=AliasChoices("KIMIDOCS_ALLOW_EMULATOR"))
    shared_limits: bool = Field(default=True, validation_alias=AliasChoices("KIMIDOCS_SHARED_LIMITS"))
    # A Redis server that every worker of the account shares (kimidocs/kimi/redis_limits.py): the Kimi
    # limits hold for all machines together. Unset: each process limits itself (or Prefect's limits do).
    limits_url: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KIMIDOCS_LIMITS_URL"))
    # Shrinks the limiters' minute and day windows like the emulator's time_scale (tests, benchmarks).
    limits_time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_LIMITS_TIME_SCALE"),
    )
    prefect_secret_block: str | None = Field(
        default=None, validation_alias=AliasChoices("KIMIDOCS_PREFECT_SECRET_BLOCK")
    )
    # Hold calls back so a shared prefix is cached first only when that saves at least this many dollars
    # (kimidocs/core/schedule.py: shared tokens not yet cached x (miss - hit price) x (calls - 1)).
    wait_min_saving_usd: float = Field(
        default=DEFAULT_MIN_SAVING_USD,
        ge=0,
        allow_inf_nan=False,
        validation_alias=AliasChoices("KIMIDOCS_WAIT_MIN_SAVING_USD"),
    )
    # Folders of user profiles (os.pathsep-separated), searched before the built-ins; unset: ./profiles.
    profiles_path: str | None = Field(default=None, validation_alias=AliasChoices("KIMIDOCS_PROFILES"))
    # Calls that share a prefix: the first goes alone when the scheduler says the cache pays for the wait
    # (kimidocs/core/schedule.py). Off: no call ever waits (they all miss); for benchmarks.
    prefix_scheduling: bool = Field(default=True, validation_alias=AliasChoices("KIMIDOCS_PREFIX_SCHEDULING"))
    # Models that are not in kimidocs' table (any OpenAI-compatible server): a TOML file, see
    # kimidocs.core.models.load_models_file. Checked at start-up like every other setting.
    models_file: Path | None = Field(default=None, validation_alias=AliasChoices("KIMIDOCS_MODELS_FILE"))

    @field_validator("kimi_api_key", mode="before")
    @classmethod
    def _clean_key(cls, value: Any) -> str | None:
        """Strip the newline a `.env` file or a copy-paste adds; refuse what no header can carry."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None and not isinstance(value, str):
            raise ValueError("KIMI_API_KEY must be text")
        return clean_api_key(value)

    @field_validator("kimi_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"KIMI_BASE_URL must be an http(s) URL such as {DEFAULT_BASE_URL}")
        return value.strip().rstrip("/")

    @field_validator("db", mode="before")
    @classmethod
    def _check_lake_location(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            check_lake_location(str(value))
        return value

    @field_validator("limits_url")
    @classmethod
    def _check_limits_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = urlsplit(value.get_secret_value().strip()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("KIMIDOCS_LIMITS_URL must be a Redis URL such as redis://host:6379/0")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("tier")
    @classmethod
    def _check_tier(cls, value: str) -> str:
        from kimidocs.kimi.limits import TIERS

        key = value.lower().replace(" ", "").replace("_", "")
        if key not in TIERS:
            raise ValueError(f"unknown tier {value!r}; known: {', '.join(TIERS)}")
        return key

    @field_validator("pdf_engine")
    @classmethod
    def _check_pdf_engine(cls, value: str) -> str:
        from extractors.limits import PDF_ENGINES

        key = value.strip().lower()
        if key not in PDF_ENGINES:
            raise ValueError(f"unknown PDF engine {value!r}; known: {', '.join(PDF_ENGINES)}")
        return key

    @field_validator("models_file")
    @classmethod
    def _check_models_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_models_file(value)
            except ModelsFileError as err:
                raise ValueError(str(err)) from None
        return value

    def declared_models(self) -> dict[str, ModelInfo]:
        """The models KIMIDOCS_MODELS_FILE declares (none when unset)."""
        return load_models_file(self.models_file) if self.models_file else {}

    def model(self, model_id: str | None = None) -> ModelInfo:
        """`model_id` (default KIMI_MODEL) from the table or the declared models; `UnknownModel`."""
        return get_model(model_id or self.kimi_model or DEFAULT_MODEL, self.declared_models())

    def api_key_value(self) -> str | None:
        """The key in clear, for the Authorization header only."""
        return self.kimi_api_key.get_secret_value() if self.kimi_api_key else None


class ConfigError(ValueError):
    """A setting, option or argument that cannot work. One line for the user, naming what to change;
    the CLI prints it and exits 2, a flow run fails with it. Never contains the API key."""


def load_settings(**overrides: object) -> Settings:
    """Settings from env and `.env`, with explicit overrides (CLI flags, flow parameters) on top.

    Raises `ConfigError` (one line per bad value, the variable named, the value not echoed)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def check_lake_location(text: str) -> None:
    """A `ducklake:` location must be one kimidocs can attach (`ducklake:postgres:<libpq string>`):
    anything else would silently become a DuckDB file named `ducklake:...` in the working folder."""
    text = text.strip()
    if not text.startswith("ducklake:"):
        return
    from kimidocs.store.location import PREFIX, LakeLocation

    if not text.startswith(PREFIX):
        raise ValueError(
            f"KIMIDOCS_DB / --db: kimidocs keeps a DuckLake's catalog in PostgreSQL only: write "
            f"'{PREFIX}dbname=... host=...', or give a DuckDB file path"
        )
    try:
        LakeLocation.parse(text)
    except ValueError:
        raise ValueError(
            f"KIMIDOCS_DB / --db: '{PREFIX}' needs a libpq connection string after it, such as "
            f"'{PREFIX}dbname=kimidocs host=db.internal'"
        ) from None


def check_db_path(path: Path) -> Path:
    """The database path a run will write, refused in one line when it cannot be one. Checked when a
    run opens (not in `Settings`: `kimidocs extract` or `plan` never touch the database). A DuckLake
    location's form is checked in `Settings`; whether its server answers, when the store attaches it."""
    if str(path).strip().startswith("ducklake:"):
        try:
            check_lake_location(str(path))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return path
    if path.is_dir():
        raise ConfigError(
            f"KIMIDOCS_DB / --db: {path} is a folder; give a file such as {path}/kimidocs.duckdb"
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"KIMIDOCS_DB / --db: the folder {path.parent} does not exist; create it or choose another path"
        )
    return path


def describe_validation_error(error: ValidationError) -> str:
    """`KIMIDOCS_MAX_PAGES: Input should be a valid integer; ...`: the variable, then the reason."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        reason = str(item["msg"]).removeprefix("Value error, ")
        problems.append(reason if reason.startswith(where) else f"{where}: {reason}")
    return "invalid settings: " + "; ".join(problems)


__all__ = [
    "DEFAULT_BASE_URL",
    "INTERNATIONAL_BASE_URL",
    "ConfigError",
    "InvalidKeyFormat",
    "Settings",
    "check_db_path",
    "describe_validation_error",
    "load_settings",
]
