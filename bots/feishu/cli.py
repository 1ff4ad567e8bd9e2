"""`ocrhub feishu-connect`: receive a bot's events over Feishu's long connection instead of a webhook."""

from __future__ import annotations

import logging
import sys

import click

from ocrhub.settings import SettingsError, get_settings


@click.command(name="feishu-connect")
@click.option("--bot", "bot_id", default="default", show_default=True, help="Which bot: 'default' (OCRHUB_FEISHU_*) or a key of OCRHUB_FEISHU_BOTS.")
def feishu_connect(bot_id: str) -> None:
    """Receive a Feishu bot's messages over a long connection: no public URL needed.

    In the app's console choose 'Receive events through persistent connection'. Images are queued
    on the hub's Redis (OCRHUB_REDIS_URL, or the hub `ocrhub up` published) with the same dedupe
    as the webhook; run the workers as usual. Runs until stopped.
    """
    from bots.feishu.bots import BotConfigError, bot_in_force
    from ocrhub.runtime import connect

    try:
        settings = get_settings()
        conn = connect(settings)
        conn.ping()
        bot = bot_in_force(settings, conn, bot_id)  # bots added on the admin page too
    except (SettingsError, BotConfigError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means the same thing here
        raise click.ClickException(f"cannot reach the hub's Redis: {exc}") from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ocrhub.feishu").info("feishu bot %s (app %s): opening the long connection to %s", bot.bot_id, bot.app_id, bot.domain)

    from bots.feishu import longconn

    longconn.run(bot, settings, conn)
