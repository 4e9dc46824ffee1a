"""Settings from the environment (and ``.env``), validated once at start-up.

Secrets are ``SecretStr``: they never appear in ``repr``, logs or messages. Every outbound service has
a base-URL setting so the simulators in ``sim/`` can stand in for the real thing.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

FaceEngineName = Literal["auto", "insightface", "dlib"]


class Settings(BaseSettings):
    """Everything loraops reads from its environment. Names are the upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Discord
    discord_token: SecretStr | None = None
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_api_base: str | None = None  # e.g. http://127.0.0.1:PORT/api/v10 (simulator)
    discord_gateway_url: str | None = None  # e.g. ws://127.0.0.1:PORT/gateway (simulator)

    # Storage
    database_url: str = "sqlite+aiosqlite:///data/loraops.db"
    data_dir: Path = Path("data")

    # RunPod
    runpod_api_key: SecretStr | None = None
    runpod_api_base_url: str = "https://api.runpod.io"
    runpod_worker_image: str = "ghcr.io/loraops/worker:0.1.0"
    runpod_proxy_url_template: str = "https://{pod_id}-8000.proxy.runpod.net"
    runpod_network_volume_id: str | None = None
    runpod_cloud_type: Literal["SECURE", "COMMUNITY", "ALL"] = "SECURE"
    hf_token: SecretStr | None = None
    # Key for deriving each job's worker bearer token (HMAC of the job), so no token is stored; when
    # unset, RUNPOD_API_KEY serves as the key (see bot.training.tokens).
    worker_token_key: SecretStr | None = None

    # Cloudinary
    cloudinary_url: SecretStr | None = None

    # Faces
    face_engine: FaceEngineName = "auto"
    face_models_dir: Path | None = None

    # Roles (Discord role names)
    trainer_role: str = "trainer"
    reviewer_role: str = "reviewer"
    admin_role: str = "admin"
    approvals_required: int = Field(default=1, ge=1, le=25)

    # Money
    default_job_budget_usd: Decimal = Field(default=Decimal("5.00"), gt=0)
    monthly_budget_usd: Decimal = Field(default=Decimal("50.00"), gt=0)
    max_live_jobs_per_guild: int = Field(default=2, ge=1, le=50)
    progress_edit_interval_s: float = Field(default=15.0, ge=1.0)
    poll_interval_s: float = Field(default=15.0, ge=0.05)
    # A pod whose training has ended terminates itself when the bot has not called for this long
    # (the bot is down): the run's files are lost then, but an idle GPU stops billing.
    worker_unattended_stop_s: float = Field(default=3600.0, ge=60.0)

    # Gathering
    allow_private_urls: bool = False
    fetch_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    fetch_timeout_s: float = Field(default=30.0, gt=0)
    max_image_pixels: int = Field(default=80_000_000, gt=0)
    zip_max_entries: int = Field(default=2000, gt=0)
    zip_max_total_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    phash_threshold: int = Field(default=4, ge=0, le=64)

    # Delivery
    comfyui_loras_dir: Path | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        # Accept "1,2,3" as well as a JSON list, which is how people write it in a .env file.
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("default_job_budget_usd", "monthly_budget_usd")
    @classmethod
    def _budget_in_cents(cls, value: Decimal) -> Decimal:
        # The same rule as budgets set from Discord: rounded to the cent, then checked.
        from bot.errors import InvalidInputError
        from bot.guilds import check_budget

        try:
            return check_budget(value)
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    def secret_values(self) -> list[str]:
        """Every secret setting's value, for redaction (the log also redacts by shape)."""
        secrets = (
            self.discord_token,
            self.runpod_api_key,
            self.cloudinary_url,
            self.hf_token,
            self.worker_token_key,
        )
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


class SettingsError(Exception):
    """Raised with one readable line per problem; never a traceback for the user."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one clear line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError(problems) from None
