"""One table of settings: each is a flag, an environment variable and a config-file key.

`--port 9000`, `DEPLOYTRACK_PORT=9000` and `port = 9000` in the TOML file all set the same
setting. Precedence: flag > environment > config file > default.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.timeutil import EARLIEST_DEFAULT, TimeBounds, parse_timestamp

ENV_PREFIX = "DEPLOYTRACK_"
RULE_APIS = frozenset({"versioner", "quanta", "devgrid", "ilert"})
DEFAULT_ALIASES = {"prod": "production", "stg": "staging", "dev": "development"}
NOTIFY_EVENTS = ("deployment_failed", "rollback", "incident_opened", "incident_resolved", "band_changed")
NOTIFY_FORMATS = ("slack", "json")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    flag: bool = True  # False: environment variable and config file only (a secret must not show in `ps`)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "address to listen on"),
    Setting("port", 8080, "port to listen on"),
    Setting("db", "deploytrack.db", "SQLite database file (created on first start), "
                  "or a PostgreSQL URL postgresql://user@host/db (password: see db_password_file)"),
    Setting("db_password_file", "", "file holding the PostgreSQL password; wins over db_password, the URL, "
                                    "PGPASSWORD and ~/.pgpass, in that order"),
    Setting("db_password", "", "PostgreSQL password (environment or config file only, never a flag)", flag=False),
    Setting("db_readers", 4, "read connections in the pool (every read of the server goes through it)"),
    Setting("db_projection_ms", 50, "SQLite: longest an accepted event waits in the staging log before it is "
                                     "moved into the indexed tables (a read moves it at once)"),
    Setting("public_read", False, "let anyone read the UI and read API without a token"),
    Setting("max_body_bytes", 1_048_576, "largest request body accepted, in bytes (413 above)"),
    Setting("max_batch_events", 5000, "most events in one DevGrid batch (413 above)"),
    Setting("max_field_chars", 4096, "longest text field accepted, in characters"),
    Setting("max_metadata_keys", 200, "most keys in an event's metadata object"),
    Setting("earliest_timestamp", EARLIEST_DEFAULT, "event, incident and commit times before this "
                                                    "(ISO 8601) are refused with a 400"),
    Setting("max_future_seconds", 86_400, "event, incident and commit times more than this many seconds "
                                          "past the server's clock are refused with a 400"),
    Setting("rate_limit", 0, "requests per second allowed per token (0 = no limit)"),
    Setting("max_header_bytes", 65_536, "largest request line plus headers, in bytes (431 above)"),
    Setting("max_headers", 100, "most header fields in one request (431 above)"),
    Setting("header_timeout", 10, "seconds a connection has to send a request's complete headers"),
    Setting("min_body_rate", 1024, "slowest request body accepted after body_grace, in bytes per second (0 = off)"),
    Setting("body_grace", 10, "seconds a request body may arrive at any speed before min_body_rate applies"),
    Setting("keep_alive_timeout", 5, "seconds an idle keep-alive connection stays open"),
    Setting("production_environments", "production", "comma-separated environments counted as production"),
    Setting("count_failed_deployments", False, "count failed production deployments as change failures"),
    Setting("scheduler", True, "run the daily metrics job inside the server"),
    Setting("metrics_interval", 300, "seconds between the metrics job's checks for backfilled days"),
    Setting("log_level", "info", "uvicorn log level: " + ", ".join(LOG_LEVELS)),
    Setting("rules_block_apis", "versioner", "comma-separated APIs on which an enabled deployment rule refuses a "
                                             "deployment (versioner, quanta, devgrid, ilert); on the others it is "
                                             "recorded only"),
    Setting("environment_aliases", DEFAULT_ALIASES, "config file only: table of alias = canonical environment"),
    Setting("public_url", "", "base URL users reach the server at, for hook URLs and links in notifications "
                              "(default http://HOST:PORT)"),
    Setting("hook_max_body_bytes", 26_214_400, "largest webhook delivery accepted at /hooks/..., in bytes (413 above)"),
    Setting("hook_products", {}, "config file only: table of repository or service name = product, for hooks "
                                 "created without --product"),
    Setting("alert_product_label", "service", "Alertmanager/Grafana alert label naming the product"),
    Setting("alert_environment_label", "environment", "Alertmanager/Grafana alert label naming the environment"),
    Setting("notify_urls", "", "comma-separated webhook URLs that receive notifications (none = off)"),
    Setting("notify_events", ",".join(NOTIFY_EVENTS), "comma-separated notifications to send: "
                                                       + ", ".join(NOTIFY_EVENTS)),
    Setting("notify_format", "slack", "notification body: slack (Slack, Mattermost, Rocket.Chat) or json"),
    Setting("notify_interval", 2.0, "seconds between checks for new notifications and due retries"),
    Setting("notify_retry_seconds", 10.0, "first retry delay of a failed notification; doubles each time, "
                                          "at most an hour"),
    Setting("notify_max_attempts", 12, "attempts before a notification is given up (kept in the outbox)"),
    Setting("notify_timeout", 10.0, "seconds to wait for a notification receiver to answer"),
    Setting("search_window", 50_000, "most events one event search examines when its index cannot answer it "
                                     "(a term under 3 characters, or in very many summaries); a page it "
                                     "leaves short carries a cursor to search older events"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


# The span each number may take (None: no upper end). Below it the server would refuse every request and blame
# the client (a batch of at most 0 events), or spin; above a timer's end it stopped answering at all (a
# 400-digit header_timeout).
RANGES: dict[str, tuple[float, float | None]] = {
    "port": (1, 65535), "db_readers": (1, 100), "db_projection_ms": (1, 60_000),
    "max_body_bytes": (1024, None), "max_batch_events": (1, None), "max_field_chars": (64, None),
    "max_metadata_keys": (1, None), "max_future_seconds": (0, None), "rate_limit": (0, None),
    "max_header_bytes": (1024, None), "max_headers": (16, None), "header_timeout": (1, 86_400),
    "min_body_rate": (0, None), "body_grace": (0, 86_400), "keep_alive_timeout": (1, 86_400),
    "metrics_interval": (1, 86_400), "hook_max_body_bytes": (1024, None), "notify_interval": (0.1, 3600),
    "notify_retry_seconds": (0.1, 3600), "notify_max_attempts": (1, 1000), "notify_timeout": (0.1, 3600),
    "search_window": (1, None),
}


def allowed(name: str) -> str:
    """The span a numeric setting may take, as the operators' guide and `serve --help` say it."""
    low, high = RANGES[name]
    return f"at least {low}" if high is None else f"{low} to {high}"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "deploytrack.db"
    db_password_file: str = ""
    db_password: str = field(default="", repr=False)
    db_readers: int = 4
    db_projection_ms: int = 50
    public_read: bool = False
    max_body_bytes: int = 1_048_576
    max_batch_events: int = 5000
    max_field_chars: int = 4096
    max_metadata_keys: int = 200
    earliest_timestamp: str = EARLIEST_DEFAULT
    max_future_seconds: int = 86_400
    rate_limit: float = 0
    max_header_bytes: int = 65_536
    max_headers: int = 100
    header_timeout: int = 10
    min_body_rate: int = 1024
    body_grace: int = 10
    keep_alive_timeout: int = 5
    production_environments: str = "production"
    count_failed_deployments: bool = False
    scheduler: bool = True
    metrics_interval: int = 300
    log_level: str = "info"
    rules_block_apis: str = "versioner"
    environment_aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    public_url: str = ""
    hook_max_body_bytes: int = 26_214_400
    hook_products: Mapping[str, str] = field(default_factory=dict)
    alert_product_label: str = "service"
    alert_environment_label: str = "environment"
    notify_urls: str = ""
    notify_events: str = ",".join(NOTIFY_EVENTS)
    notify_format: str = "slack"
    notify_interval: float = 2.0
    notify_retry_seconds: float = 10.0
    notify_max_attempts: int = 12
    notify_timeout: float = 10.0
    search_window: int = 50_000

    @property
    def base_url(self) -> str:
        """Where users reach the server (links in hook URLs and notifications)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def notify_url_list(self) -> list[str]:
        return [u.strip() for u in self.notify_urls.split(",") if u.strip()]

    @property
    def notify_event_set(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.notify_events.split(",") if e.strip())

    @property
    def production_set(self) -> frozenset[str]:
        return frozenset(canonical_environment(e, self.environment_aliases)
                         for e in self.production_environments.split(",") if e.strip())

    @functools.cached_property  # read by every ingestion request
    def rules_block_set(self) -> frozenset[str]:
        """The APIs on which an enabled deployment rule refuses a deployment."""
        return frozenset(a.strip().lower() for a in self.rules_block_apis.split(",") if a.strip())

    @property
    def time_bounds(self) -> TimeBounds:
        """The span of time recorded events, incidents and commits may claim."""
        return TimeBounds(parse_timestamp(self.earliest_timestamp, "earliest_timestamp"),
                          self.max_future_seconds * 1_000_000)


def canonical_environment(name: str, aliases: Mapping[str, str]) -> str:
    """Trim, lower-case and fold an environment name through the alias table."""
    key = name.strip().lower()
    return aliases.get(key, key)


_WHOLE = re.compile(r"[+-]?[0-9](_?[0-9])*")  # (10_000_000 as Python and TOML write it)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_KINDS = {f.name: f.type for f in fields(Settings)}  # "int", "float", "bool", "str" or a Mapping


_SECRET = frozenset({"db", "db_password", "notify_urls"})  # their values never go into a message
_LOWERED = frozenset({"log_level"})  # told in any case ("INFO" as uvicorn takes it)


def shown(value: Any, name: str = "") -> str:
    """A value as the config file spells it, for an error message; only its kind for a secret, an array, a table
    or a date."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    if name in _SECRET:
        return "text" if isinstance(value, str) else "a boolean" if isinstance(value, bool) else "a number"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + "..."
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."


def _coerce(name: str, value: Any) -> Any:
    """A value of the setting's own type: the config file's typed values as they are (true is not a number,
    8892.5 not a whole number, 5 not a path), text from flags and the environment parsed strictly."""
    kind = _KINDS[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"setting {name!r}: expected true or false, got {shown(value, name)}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
            with contextlib.suppress(ValueError):  # (more digits than Python reads: 4,300)
                return int(value)
        raise ValueError(f"setting {name!r}: expected a whole number, got {shown(value, name)}")
    if kind == "float":
        try:
            number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else \
                float(value) if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()) else None
        except OverflowError:  # a whole number of hundreds of digits
            number = None
        if number is None or not math.isfinite(number):
            raise ValueError(f"setting {name!r}: expected a number, got {shown(value, name)}")
        return number
    if kind == "str":
        if name == "earliest_timestamp" and isinstance(value, datetime.date):  # a TOML date or date-time
            moment = value if isinstance(value, datetime.datetime) else \
                datetime.datetime.combine(value, datetime.time())
            return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).isoformat()
        if not isinstance(value, str):
            raise ValueError(f"setting {name!r}: expected a string, got {shown(value, name)}")
        return value.strip().lower() if name in _LOWERED else value
    if not isinstance(value, Mapping):
        raise ValueError(f"setting {name!r}: expected a table, got {shown(value, name)}")
    for key, entry in value.items():
        if not isinstance(entry, str):
            raise ValueError(f"setting {name!r}, entry {shown(key)}: expected a string, got {shown(entry)}")
    if name != "environment_aliases":  # names as written (products are case-sensitive)
        return {k.strip(): v.strip() for k, v in value.items()}
    return {**DEFAULT_ALIASES, **{k.strip().lower(): v.strip().lower() for k, v in value.items()}}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Build Settings from flags, environment variables and an optional TOML file."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        with Path(config_path).open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except (tomllib.TOMLDecodeError, ValueError) as exc:  # (ValueError: a number past Python's digits)
                raise ValueError(f"{config_path}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _BY_NAME:
                raise ValueError(f"{config_path}: unknown setting {key!r}")
            values[name] = _coerce(name, value)
    for s in SETTINGS:
        env_value = environ.get(ENV_PREFIX + s.name.upper())
        if env_value is not None and not isinstance(s.default, dict):
            values[s.name] = _coerce(s.name, env_value)
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    for name, (low, high) in RANGES.items():
        value = getattr(s, name)
        if value < low or (high is not None and value > high):
            raise ValueError(f"setting {name!r}: must be {allowed(name)}, got {value}")
    unknown = sorted(s.rules_block_set - RULE_APIS)
    if unknown:
        raise ValueError(f"setting 'rules_block_apis': unknown API {unknown[0]!r}; expected some of "
                         f"{', '.join(sorted(RULE_APIS))}")
    if not s.production_set:
        raise ValueError("setting 'production_environments': name at least one environment")
    for url in s.notify_url_list:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"setting 'notify_urls': an entry is not an http(s) URL (it starts "
                             f"{url.split(':', 1)[0][:12]!r})")
    unknown = sorted(s.notify_event_set - set(NOTIFY_EVENTS))
    if unknown:
        raise ValueError(f"setting 'notify_events': unknown {', '.join(unknown)}; known: {', '.join(NOTIFY_EVENTS)}")
    if s.log_level not in LOG_LEVELS:
        raise ValueError(f"setting 'log_level': must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    if s.notify_format not in NOTIFY_FORMATS:
        raise ValueError(f"setting 'notify_format': must be one of {', '.join(NOTIFY_FORMATS)}")
    try:
        parse_timestamp(s.earliest_timestamp, "earliest_timestamp")
    except BadRequest:
        raise ValueError(f"setting 'earliest_timestamp': {s.earliest_timestamp!r} is not an ISO 8601 time "
                         "between 1970 and 9999") from None


def settings_help() -> str:
    """The settings table as text, for `serve --help` and the README."""
    lines = ["settings (flag / environment variable / config-file key):"]
    for s in SETTINGS:
        config_only = isinstance(s.default, dict)  # a table: no flag or environment variable
        flag = "(config file only)" if config_only else "--" + s.name.replace("_", "-") if s.flag \
            else "(no flag)"
        env = "" if config_only else ENV_PREFIX + s.name.upper()
        lines.append(f"  {flag:28} {env:38} {s.name}")
        span = f"; allowed: {allowed(s.name)}" if s.name in RANGES else ""
        lines.append(f"      {s.help} (default: {s.default}{span})")
    return "\n".join(lines)


assert {f.name for f in fields(Settings)} == set(_BY_NAME), "SETTINGS and Settings disagree"
