"""The Feishu apps one hub serves, keyed by bot_id: "default" from OCRHUB_FEISHU_*, more from OCRHUB_FEISHU_BOTS."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from ocr_core.errors import PermanentError
from ocrhub.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BOT = "default"
BOT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GROUP_POLICIES = ("all", "mention")
LANGUAGES = ("zh", "en")
# How a bot's events arrive: POSTed to its webhook, or over the long connection `ocrhub feishu-connect` opens.
WEBHOOK, LONG_CONNECTION = "webhook", "long-connection"
MODES = (WEBHOOK, LONG_CONNECTION)


class BotConfigError(PermanentError, ValueError):
    """A bot cannot work as configured; the message names the setting to fix. Never retried."""


@dataclass(frozen=True)
class FeishuBot:
    """One Feishu app. Secrets are kept out of repr so a logged bot never shows them."""

    bot_id: str
    app_id: str
    app_secret: str = field(repr=False)
    encrypt_key: str = field(default="", repr=False)
    verification_token: str = field(default="", repr=False)
    domain: str = "https://open.feishu.cn"
    group_policy: str = "all"
    open_id: str = ""
    allow_unverified: bool = False
    reply_in_thread: bool = False
    mode: str = WEBHOOK
    language: str = "en"  # of its replies: "zh" or "en"

    @property
    def setting(self) -> str:
        """Where a person configures this bot, for error messages."""
        return "OCRHUB_FEISHU_*" if self.bot_id == DEFAULT_BOT else f"OCRHUB_FEISHU_BOTS[{self.bot_id!r}]"

    @property
    def webhook_path(self) -> str:
        return "/feishu/events" if self.bot_id == DEFAULT_BOT else f"/feishu/{self.bot_id}/events"

    @property
    def verifies_requests(self) -> bool:
        return bool(self.encrypt_key or self.verification_token)

    def mode_setting(self, mode: str) -> str:
        """How a person sets this bot's mode to `mode`, for error messages."""
        return f"OCRHUB_FEISHU_MODE={mode}" if self.bot_id == DEFAULT_BOT else f'"mode": "{mode}" in {self.setting}'

    def check_webhook(self) -> None:
        """Refuse to serve a webhook that anyone could post jobs to, unless the admin said so.

        A bot in long-connection mode serves no webhook: Feishu authenticates that connection itself.
        """
        if self.mode == WEBHOOK and not self.verifies_requests and not self.allow_unverified:
            raise BotConfigError(
                f"Feishu bot {self.bot_id!r} has neither an Encrypt Key nor a Verification Token, so its webhook "
                f"({self.webhook_path}) would accept events from anyone: copy them from the app's 'Events & Callbacks' "
                f"page into {self.setting} (encrypt_key / verification_token). If the bot receives its events over the "
                f"long connection (`ocrhub feishu-connect`), which needs neither, set {self.mode_setting(LONG_CONNECTION)} "
                f"instead; or set OCRHUB_FEISHU_ALLOW_UNVERIFIED=true if something in front of the hub already "
                f"authenticates Feishu"
            )


def _check_domain(domain: str, where: str) -> str:
    parts = urlsplit(domain)
    local = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not local) or not parts.hostname:
        raise BotConfigError(f"{where}: {domain!r} is not an https:// origin (http:// only for localhost)")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
        raise BotConfigError(f"{where}: {domain!r} must be an origin only, like https://open.feishu.cn")
    return domain.rstrip("/")


def _bot(bot_id: str, *, app_id: str, app_secret: str, encrypt_key: str, verification_token: str,
         domain: str, group_policy: str, open_id: str, allow_unverified: bool, reply_in_thread: bool, mode: str,
         language: str = "en") -> FeishuBot:
    bot = FeishuBot(
        bot_id=bot_id,
        app_id=app_id.strip(),
        app_secret=app_secret.strip(),
        encrypt_key=encrypt_key.strip(),
        verification_token=verification_token.strip(),
        domain=_check_domain(domain, f"Feishu bot {bot_id!r} domain"),
        group_policy=group_policy,
        open_id=open_id.strip(),
        allow_unverified=allow_unverified,
        reply_in_thread=reply_in_thread,
        mode=mode,
        language=language,
    )
    if bot.language not in LANGUAGES:
        raise BotConfigError(f"Feishu bot {bot_id!r}: language {bot.language!r} is not one of {LANGUAGES}")
    if not bot.app_id or not bot.app_secret:
        raise BotConfigError(f"Feishu bot {bot_id!r} needs both an App ID and an App Secret ({bot.setting})")
    if bot.group_policy not in GROUP_POLICIES:
        raise BotConfigError(f"Feishu bot {bot_id!r}: group policy {bot.group_policy!r} is not one of {GROUP_POLICIES}")
    if bot.mode not in MODES:
        raise BotConfigError(f"Feishu bot {bot_id!r}: mode {bot.mode!r} is not one of {MODES}")
    if bot.group_policy == "mention" and not bot.open_id:
        raise BotConfigError(
            f"Feishu bot {bot_id!r} reads only messages that @ it, so it needs its own open_id (ou_…) to recognise "
            f"the mention: set {'OCRHUB_FEISHU_BOT_OPEN_ID' if bot_id == DEFAULT_BOT else 'bot_open_id in ' + bot.setting}"
        )
    return bot


def load_bots(settings: Settings) -> dict[str, FeishuBot]:
    """Every configured bot; an empty dict when Feishu is not set up at all."""
    bots: dict[str, FeishuBot] = {}
    if settings.feishu_app_id or settings.feishu_app_secret.get_secret_value():
        bots[DEFAULT_BOT] = _bot(
            DEFAULT_BOT,
            app_id=settings.feishu_app_id,
            app_secret=settings.feishu_app_secret.get_secret_value(),
            encrypt_key=settings.feishu_encrypt_key.get_secret_value(),
            verification_token=settings.feishu_verification_token.get_secret_value(),
            domain=settings.feishu_domain,
            group_policy=settings.feishu_group_policy,
            open_id=settings.feishu_bot_open_id,
            allow_unverified=settings.feishu_allow_unverified,
            reply_in_thread=settings.feishu_reply_in_thread,
            mode=settings.feishu_mode,
            language=settings.feishu_language,
        )
    for bot_id, extra in settings.feishu_bots.items():
        if not BOT_ID.match(bot_id) or bot_id == DEFAULT_BOT:
            raise BotConfigError(
                f"OCRHUB_FEISHU_BOTS: {bot_id!r} is not a usable bot id (letters, digits, '-' and '_'; "
                f"{DEFAULT_BOT!r} is the bot configured by OCRHUB_FEISHU_*)"
            )
        bots[bot_id] = _bot(
            bot_id,
            app_id=extra.app_id,
            app_secret=extra.app_secret.get_secret_value(),
            encrypt_key=extra.encrypt_key.get_secret_value(),
            verification_token=extra.verification_token.get_secret_value(),
            domain=extra.domain or settings.feishu_domain,
            group_policy=extra.group_policy or settings.feishu_group_policy,
            open_id=extra.bot_open_id,
            allow_unverified=extra.allow_unverified or settings.feishu_allow_unverified,
            reply_in_thread=settings.feishu_reply_in_thread if extra.reply_in_thread is None else extra.reply_in_thread,
            mode=extra.mode or settings.feishu_mode,
            language=extra.language or settings.feishu_language,
        )
    return bots


def get_bot(settings: Settings, bot_id: str) -> FeishuBot:
    bots = load_bots(settings)
    bot = bots.get(bot_id)
    if bot is None:
        known = ", ".join(sorted(bots)) or "none"
        raise BotConfigError(
            f"no Feishu bot {bot_id!r} is configured (known: {known}); set OCRHUB_FEISHU_APP_ID/APP_SECRET "
            f"for the default bot or add it to OCRHUB_FEISHU_BOTS"
        )
    return bot


# Bots edited on the admin page live in Redis (ocrhub.config_store): a stored record overrides the
# settings' bot of the same id, `enabled: false` switches one off, `removed: true` hides a settings'
# bot. Every process re-reads them within a second of a change (ocrhub.config_store.Reloading).
KIND = "feishu-bot"
SECRET_FIELDS = ("app_secret", "encrypt_key", "verification_token")


def bot_record(bot: FeishuBot, *, enabled: bool = True) -> dict[str, object]:
    """A bot as the config store keeps it (secrets in clear here; the store seals them)."""
    return {
        "app_id": bot.app_id,
        "app_secret": bot.app_secret,
        "encrypt_key": bot.encrypt_key,
        "verification_token": bot.verification_token,
        "domain": bot.domain,
        "group_policy": bot.group_policy,
        "bot_open_id": bot.open_id,
        "allow_unverified": bot.allow_unverified,
        "reply_in_thread": bot.reply_in_thread,
        "mode": bot.mode,
        "language": bot.language,
        "enabled": enabled,
    }


def bot_from_record(bot_id: str, record: dict) -> FeishuBot:
    """Raises BotConfigError naming what is wrong with the record."""
    if not BOT_ID.match(bot_id):
        raise BotConfigError(f"{bot_id!r} is not a usable bot id (1-64 letters, digits, '-' and '_')")
    return _bot(
        bot_id,
        app_id=str(record.get("app_id", "")),
        app_secret=str(record.get("app_secret", "")),
        encrypt_key=str(record.get("encrypt_key", "")),
        verification_token=str(record.get("verification_token", "")),
        domain=str(record.get("domain") or "https://open.feishu.cn"),
        group_policy=str(record.get("group_policy") or "all"),
        open_id=str(record.get("bot_open_id", "")),
        allow_unverified=bool(record.get("allow_unverified", False)),
        reply_in_thread=bool(record.get("reply_in_thread", False)),
        mode=str(record.get("mode") or WEBHOOK),
        language=str(record.get("language") or "en"),
    )


class BotRegistry:
    """The bots in force for one process: the settings' bots under those stored in Redis."""

    def __init__(self, settings: Settings, conn: redis.Redis) -> None:
        from ocrhub.config_store import ConfigStore, Reloading
        from ocrhub.secret_box import SecretBox

        self.settings = settings
        self.store = ConfigStore(conn, SecretBox.for_settings(settings))
        self._bots = Reloading(self.store, self._load)

    def bots(self) -> dict[str, FeishuBot]:
        return self._bots.get()

    def records(self) -> dict[str, tuple[str, dict]]:
        """Every bot the page shows, enabled or not: id → (where it comes from, its record)."""
        shown = {bot_id: ("settings", bot_record(bot)) for bot_id, bot in load_bots(self.settings).items()}
        from ocrhub.secret_box import SecretBoxError

        try:
            stored = self.store.all(KIND, SECRET_FIELDS)
        except SecretBoxError as exc:
            log.error("the Feishu bots added on the admin page are not used: %s", exc)
            stored = {}
        for bot_id, record in stored.items():
            if record.get("removed"):
                shown.pop(bot_id, None)
            else:
                shown[bot_id] = ("admin", record)
        return shown

    def _load(self) -> dict[str, FeishuBot]:
        bots = {}
        for bot_id, (_source, record) in self.records().items():
            if not record.get("enabled", True):
                continue
            try:
                bots[bot_id] = bot_from_record(bot_id, record)
            except BotConfigError as exc:  # checked when saved; a record edited by hand is skipped, loudly
                log.error("stored Feishu bot %r is skipped: %s", bot_id, exc)
        return bots


_registries: dict[int, BotRegistry] = {}


def registry(settings: Settings, conn: redis.Redis) -> BotRegistry:
    """This process's registry for `conn` (one per connection, so tests with several hubs stay apart)."""
    found = _registries.get(id(conn))
    if found is None or found.settings is not settings:
        found = _registries[id(conn)] = BotRegistry(settings, conn)
    return found


def bot_in_force(settings: Settings, conn: redis.Redis, bot_id: str) -> FeishuBot:
    """`get_bot`, counting the bots configured on the admin page."""
    bots = registry(settings, conn).bots()
    bot = bots.get(bot_id)
    if bot is None:
        known = ", ".join(sorted(bots)) or "none"
        raise BotConfigError(f"no Feishu bot {bot_id!r} is configured or enabled (known: {known}); add it on the admin page or in OCRHUB_FEISHU_*")
    return bot
