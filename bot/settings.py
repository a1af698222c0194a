"""Every environment variable of PRODUCT.md › Interfaces, typed, read once in the entry point."""

from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from kpi.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///kpibot.db"


class Settings(BaseSettings):
    # An empty variable (`PORT=` copied from .env.example) means its default, not an error.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    slack_bot_token: SecretStr = SecretStr("")
    slack_signing_secret: SecretStr = SecretStr("")
    slack_app_token: SecretStr = SecretStr("")
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = DEFAULT_DATABASE_URL
    kpibot_timezone: str = "UTC"
    kpibot_admins: str = ""
    kpibot_alert_channel: str = ""
    port: int = Field(default=3000, ge=1, le=65535)
    # Beyond the contract: how often `serve` looks for due digests (tests use a fast tick).
    kpibot_tick_seconds: int = Field(default=60, ge=1, le=3600)
    # Beyond the contract: minutes between scheduled alert evaluations in `serve`.
    kpibot_alert_minutes: float = Field(default=15, gt=0, le=1440)

    @field_validator("kpibot_timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r} (try Europe/Berlin or UTC)") from error
        return value

    @field_validator("database_url")
    @classmethod
    def usable_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as error:
            raise ValueError(f"not a database URL: {value!r}") from error
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def web_api_url(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"not an http(s) URL: {value!r} (Slack's is https://slack.com/api/)")
        # slack_sdk joins method names onto base_url, so it must end with a slash.
        return value if value.endswith("/") else value + "/"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.kpibot_timezone)

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(a for a in self.kpibot_admins.replace(",", " ").split() if a)


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a bad variable into one clear line that names it."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from None
