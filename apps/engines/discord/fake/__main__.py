"""``python -m apps.engines.discord.fake [--port 8765] [--user TOKEN:CHANNEL …]``."""

from __future__ import annotations

import argparse
import asyncio

from .server import FakeDiscord, serve
from .world import FakeUser


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Discord with a Midjourney bot.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--step-seconds", type=float, default=1.0, help="between progress edits")
    parser.add_argument("--steps", type=int, default=3, help="progress edits per job")
    parser.add_argument("--heartbeat-ms", type=int, default=41250)
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="TOKEN:GUILD:CHANNEL[,CHANNEL]",
        help="a user to create at start (more with POST /_fake/users)",
    )
    args = parser.parse_args()
    discord = FakeDiscord(
        step_seconds=args.step_seconds, steps=args.steps, heartbeat_ms=args.heartbeat_ms
    )
    for number, spec in enumerate(args.user, start=1):
        token, guild, channels = spec.split(":", 2)
        discord.world.users[token] = FakeUser(
            token=token,
            id=discord.world.snowflake(),
            username=f"user{number}",
            guild_id=guild,
            channel_ids=set(channels.split(",")),
        )

    async def run() -> None:
        await serve(discord, args.host, args.port)
        print(f"fake Discord listening on {discord.base_url}", flush=True)  # noqa: T201
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
