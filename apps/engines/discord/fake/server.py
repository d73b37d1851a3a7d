"""The fake Discord's HTTP side: REST API (``/api/v10``), gateway WebSocket (``/gateway``),
CDN (``/attachments``), the vary-region editor (``/inpaint/api/submit-job``) and a control
API for tests and demos (``/_fake``).

Wire shapes follow Discord's public documentation and what user clients send: interactions
are ``POST /interactions`` (JSON or multipart ``payload_json``) answered 204, the bot's news
arrives on the gateway as dispatches with a per-session sequence number, and a resumed session
is sent every dispatch it missed; a session its client closed with 1000 or 1001 is ended (it
cannot be resumed), as Discord does. Attachment links are signed and expire after 24 hours
(``ex``/``is``/``hm``, checked by the CDN, which answers an expired or unsigned link 404); a
message read over REST names its files with links that are valid again, as Discord's API does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import WSMsgType, web

from .bot import MidjourneyBot
from .world import BOT_NAMES, MIDJOURNEY_BOT_ID, NIJI_BOT_ID, FakeUser, Session, World

API = "/api/v10"
COMMANDS = ("imagine", "describe", "blend", "shorten", "fast", "relax", "turbo", "settings")
#: How long a signed attachment link is valid (Discord's: 24 hours).
LINK_SECONDS = 24 * 3600
#: What Discord's CDN answers (404) for an expired or unsigned attachment link.
CONTENT_GONE = "This content is no longer available."
USER = web.RequestKey("user", FakeUser)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: int = 0, **extra: Any) -> web.Response:
    return web.json_response({"message": message, "code": code, **extra}, status=status)


class FakeDiscord:
    def __init__(
        self, *, step_seconds: float = 0.05, steps: int = 3, heartbeat_ms: int = 41250
    ) -> None:
        self.world = World()
        self.bot = MidjourneyBot(self, step_seconds=step_seconds, steps=steps)
        self.heartbeat_ms = heartbeat_ms
        self.base_url = ""
        #: The CDN's signing key, and how far its clock runs ahead (``POST /_fake/cdn/clock``).
        self.cdn_key = secrets.token_bytes(16)
        self.cdn_clock = 0.0
        for bot_id in (MIDJOURNEY_BOT_ID, NIJI_BOT_ID):
            for name in COMMANDS:
                self.world.command_versions[f"{bot_id}:{name}"] = self.world.snowflake()
        self.command_ids = {
            f"{bot_id}:{name}": self.world.snowflake()
            for bot_id in (MIDJOURNEY_BOT_ID, NIJI_BOT_ID)
            for name in COMMANDS
        }

    # --- the application ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_middleware], client_max_size=64 * 1024**2)
        app.router.add_get("/gateway", self.gateway)
        app.router.add_get(f"{API}/gateway", self.gateway_url)
        app.router.add_get(f"{API}/users/@me", self.me)
        app.router.add_get(f"{API}/guilds/{{guild}}/application-command-index", self.command_index)
        app.router.add_post(f"{API}/interactions", self.interactions)
        app.router.add_post(f"{API}/channels/{{channel}}/attachments", self.attachment_slots)
        app.router.add_put("/upload/{token}/{filename}", self.upload)
        app.router.add_get(f"{API}/channels/{{channel}}/messages", self.list_messages)
        app.router.add_post(f"{API}/channels/{{channel}}/messages", self.create_message)
        app.router.add_get(f"{API}/channels/{{channel}}/messages/{{message}}", self.get_message)
        app.router.add_put(
            f"{API}/channels/{{channel}}/messages/{{message}}/reactions/{{emoji}}/@me",
            self.react,
        )
        app.router.add_post(f"{API}/users/@me/channels", self.open_dm)
        app.router.add_get("/attachments/{channel}/{file_id}/{filename}", self.cdn)
        app.router.add_post("/inpaint/api/submit-job", self.inpaint)
        app.router.add_post("/_fake/users", self.control_user)
        app.router.add_get("/_fake/stats", self.control_stats)
        app.router.add_post("/_fake/drop", self.control_drop)
        app.router.add_post("/_fake/commands/bump", self.control_bump)
        app.router.add_post("/_fake/frames", self.control_frames)
        app.router.add_post("/_fake/cdn/clock", self.control_cdn_clock)
        return app

    def _route_key(self, request: web.Request) -> str:
        info = request.match_info.route.resource
        return f"{request.method} {info.canonical if info else request.path}"

    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API) or request.path == f"{API}/gateway":
            return await handler(request)
        user = self.world.user_by_token(request.headers.get("Authorization"))
        if user is None:
            self.world.stats["unauthorized"] += 1
            return _error(401, "401: Unauthorized")
        route = self._route_key(request)
        now = time.monotonic()
        for key in ((user.id, route), (user.id, "*")):
            if self.world.limited_until.get(key, 0) > now:
                self.world.stats["rate_limit_violations"] += 1
        if user.rate_limit > 0:
            user.rate_limit -= 1
            self.world.stats["rate_limited"] += 1
            scope_key = (user.id, "*" if user.rate_limit_global else route)
            self.world.limited_until[scope_key] = now + user.retry_after * 0.9
            return self._too_many_requests(user, route)
        request[USER] = user
        return await handler(request)

    @staticmethod
    def _too_many_requests(user: FakeUser, route: str) -> web.Response:
        """A 429 as Discord sends it: ``retry_after`` (seconds, float) and ``global`` in the
        body; ``Retry-After`` (whole seconds, rounded up) and the ``X-RateLimit-*`` headers of
        the route's bucket — or only ``X-RateLimit-Global`` and the scope for a global limit."""
        retry_after = round(user.retry_after, 3)
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": "global" if user.rate_limit_global else "user",
        }
        if user.rate_limit_global:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update(
                {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                    "X-RateLimit-Bucket": uuid.uuid5(uuid.NAMESPACE_URL, route).hex[:16],
                }
            )
        body: dict[str, Any] = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": user.rate_limit_global,
        }
        if user.rate_limit_global:
            body["code"] = 0
        return web.json_response(body, status=429, headers=headers)

    # --- messages and dispatches --------------------------------------------------------------

    async def send(self, session: Session, event: str, data: Any) -> None:
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.buffer.append(payload)
        if session.ws is not None and not session.ws.closed:
            try:
                if session.garble > 0:
                    session.garble -= 1
                    self.world.stats["garbled_frames"] += 1
                    text = json.dumps(payload)
                    await session.ws.send_str(text[: len(text) // 2])
                else:
                    await session.ws.send_json(payload)
            except (ConnectionError, RuntimeError):
                session.ws = None  # the client resumes and gets it from the buffer

    async def dispatch_user(self, user: FakeUser, event: str, data: dict[str, Any]) -> None:
        for session in list(self.world.sessions.values()):
            if session.user is user and not session.invalid:
                await self.send(session, event, data)

    async def dispatch_channel(
        self, channel_id: str, event: str, data: dict[str, Any], *, only: FakeUser | None = None
    ) -> None:
        for user in [only] if only else self.world.watchers(channel_id):
            await self.dispatch_user(user, event, data)

    def store_cdn(
        self, channel_id: str, filename: str, data: bytes, *, content_type: str = "image/png"
    ) -> dict[str, Any]:
        file_id = self.world.snowflake()
        path = f"/attachments/{channel_id}/{file_id}/{filename}"
        self.world.cdn[path] = data
        link = self._signed(path)
        return {
            "id": file_id,
            "filename": filename,
            "size": len(data),
            "url": link,
            "proxy_url": link,
            "content_type": content_type,
        }

    # --- signed attachment links --------------------------------------------------------------

    def _cdn_now(self) -> int:
        return int(time.time() + self.cdn_clock)

    def _signature(self, path: str, expires: str, issued: str) -> str:
        text = f"{path}|{expires}|{issued}".encode()
        return hmac.new(self.cdn_key, text, hashlib.sha256).hexdigest()

    def _signed(self, path: str) -> str:
        """A link to ``path`` as Discord signs one: ``ex`` (expiry) and ``is`` (issue time) in
        hex seconds, ``hm`` their signature."""
        issued = f"{self._cdn_now():x}"
        expires = f"{self._cdn_now() + LINK_SECONDS:x}"
        signature = self._signature(path, expires, issued)
        return f"{self.base_url}{path}?ex={expires}&is={issued}&hm={signature}&"

    def _link_valid(self, path: str, query: dict[str, list[str]]) -> bool:
        expires, issued, signature = (query.get(key, [""])[0] for key in ("ex", "is", "hm"))
        try:
            unexpired = int(expires, 16) > self._cdn_now()
        except ValueError:
            return False
        return unexpired and hmac.compare_digest(signature, self._signature(path, expires, issued))

    def _renewed(self, link: str) -> str:
        """An attachment link as an API answer names it: valid again once it expired."""
        parts = urlsplit(link)
        if parts.path not in self.world.cdn or self._link_valid(parts.path, parse_qs(parts.query)):
            return link
        return self._signed(parts.path)

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as the API and the gateway show it: its attachments with valid links."""
        for attachment in message.get("attachments") or []:
            for key in ("url", "proxy_url"):
                if attachment.get(key):
                    attachment[key] = self._renewed(str(attachment[key]))
        return {key: value for key, value in message.items() if not key.startswith("_")}

    async def post_message(
        self,
        channel_id: str,
        *,
        author_id: str,
        content: str,
        nonce: str = "",
        interaction: dict[str, Any] | None = None,
        for_user: FakeUser | None = None,
        flags: int = 0,
        embeds: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        reference: str = "",
    ) -> dict[str, Any]:
        author = self.world.user_by_id(author_id)
        message: dict[str, Any] = {
            "id": self.world.snowflake(),
            "type": 19 if reference else (20 if interaction else 0),
            "channel_id": channel_id,
            "author": author.as_public()
            if author
            else {"id": author_id, "username": BOT_NAMES.get(author_id, "bot"), "bot": True},
            "content": content,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "edited_timestamp": None,
            "flags": flags,
            "embeds": embeds or [],
            "attachments": attachments or [],
            "components": components or [],
            "mentions": [],
        }
        if nonce:
            message["nonce"] = nonce
        if interaction:
            user = for_user or self._interaction_user(interaction)
            message["interaction_metadata"] = {
                "id": interaction["id"],
                "type": 2,
                "name": interaction.get("name", ""),
                "user": user.as_public() if user else {},
            }
        if reference:
            message["message_reference"] = {"channel_id": channel_id, "message_id": reference}
        if not flags & 64:
            self.world.channel(channel_id)[message["id"]] = message
        await self.dispatch_channel(
            channel_id,
            "MESSAGE_CREATE",
            self._public(message),
            only=for_user if flags & 64 else None,
        )
        return message

    def _interaction_user(self, interaction: dict[str, Any]) -> FakeUser | None:
        return self.world.user_by_id(str(interaction.get("user_id", "")))

    async def edit_message(
        self,
        channel_id: str,
        message_id: str,
        *,
        content: str,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        private: dict[str, Any] | None = None,
    ) -> None:
        message = self.world.channel(channel_id).get(message_id)
        if message is None:
            return
        message["content"] = content
        message["edited_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        if attachments is not None:
            message["attachments"] = attachments
        if embeds is not None:
            message["embeds"] = embeds
        if components is not None:
            message["components"] = components
        message.update(private or {})
        await self.dispatch_channel(channel_id, "MESSAGE_UPDATE", self._public(message))

    async def delete_message(self, channel_id: str, message_id: str) -> None:
        self.world.channel(channel_id).pop(message_id, None)
        await self.dispatch_channel(
            channel_id, "MESSAGE_DELETE", {"id": message_id, "channel_id": channel_id}
        )

    def cdn_file(self, url: str) -> bytes | None:
        """A file of this fake's CDN by its link (a start frame the bot is shown)."""
        return self.world.cdn.get(urlsplit(url.strip("<>")).path)

    def dm_channel(self, user: FakeUser) -> str:
        if not user.dm_channel_id:
            user.dm_channel_id = self.world.snowflake()
        return user.dm_channel_id

    # --- gateway ------------------------------------------------------------------------------

    async def gateway_url(self, request: web.Request) -> web.Response:
        return web.json_response({"url": self.base_url.replace("http", "ws", 1) + "/gateway"})

    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024**2)
        await ws.prepare(request)
        self.world.stats["gateway_connections"] += 1
        await ws.send_json(
            {"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None}
        )
        session: Session | None = None
        closed_with: int | None = None  # the client's close code, if it sent one
        try:
            while True:
                frame = await ws.receive()
                if frame.type == WSMsgType.CLOSE:
                    closed_with = int(frame.data)
                    break
                if frame.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if frame.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                op, data = payload.get("op"), payload.get("d")
                if op == 1:
                    self.world.stats["heartbeats"] += 1
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._identify(ws, data or {})
                    if session is None:
                        break
                elif op == 6:
                    session = await self._resume(ws, data or {})
        finally:
            if session is not None:
                self.world.live_sockets.get(session.user.token, set()).discard(ws)
                if session.ws is ws:
                    session.ws = None
                    if closed_with in (1000, 1001):
                        # Discord ends a session its client closed with 1000 or 1001; any other
                        # close (or a dropped connection) leaves it resumable.
                        session.invalid = True
                        self.world.stats["sessions_closed"] += 1
                        self.world.stats[f"sessions_closed:{session.user.token}"] += 1
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        user = self.world.user_by_token(str(data.get("token", "")))
        if user is None:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        self.world.identifies[user.token] += 1
        session = Session(id=uuid.uuid4().hex, user=user, ws=ws)
        self.world.sessions[session.id] = session
        self._count_connected(user, ws)
        await self.send(
            session,
            "READY",
            {
                "v": 9,
                "user": user.as_public(),
                "session_id": session.id,
                "resume_gateway_url": self.base_url.replace("http", "ws", 1) + "/gateway",
                "guilds": [{"id": user.guild_id}],
            },
        )
        return session

    def _count_connected(self, user: FakeUser, ws: web.WebSocketResponse) -> None:
        """Track the most gateway connections one user ever had at once (must stay 1)."""
        sockets = self.world.live_sockets.setdefault(user.token, set())
        sockets.add(ws)
        live = sum(1 for socket in sockets if not socket.closed)
        key = f"max_connections:{user.token}"
        self.world.stats[key] = max(self.world.stats[key], live)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = self.world.sessions.get(str(data.get("session_id", "")))
        if session is None or session.invalid or session.user.token != data.get("token"):
            self.world.stats["resume_refused"] += 1
            self.world.stats[f"resume_refused:{data.get('token', '')}"] += 1
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return None
        self.world.stats["resumes"] += 1
        self.world.stats[f"resumes:{session.user.token}"] += 1
        session.ws = ws
        self._count_connected(session.user, ws)
        seq = int(data.get("seq") or 0)
        for payload in list(session.buffer):
            if payload["s"] > seq:
                await ws.send_json(payload)
        await self.send(session, "RESUMED", {})
        return session

    # --- REST ---------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(request[USER].as_public())

    async def command_index(self, request: web.Request) -> web.Response:
        self.world.stats["command_index"] += 1
        commands = [
            {
                "id": self.command_ids[key],
                "application_id": key.split(":")[0],
                "version": version,
                "name": key.split(":")[1],
                "type": 1,
                "description": f"/{key.split(':')[1]}",
                "options": [],
            }
            for key, version in self.world.command_versions.items()
        ]
        applications = [{"id": bot_id, "name": name} for bot_id, name in BOT_NAMES.items()]
        return web.json_response(
            {"applications": applications, "application_commands": commands, "version": "1"}
        )

    async def _payload(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = getattr(part, "name", "") or ""
                body = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    payload = json.loads(body)
                else:
                    files[name] = bytes(body)
            return payload, files
        return await request.json(), {}

    async def interactions(self, request: web.Request) -> web.Response:
        user: FakeUser = request[USER]
        payload, _files = await self._payload(request)
        nonce = str(payload.get("nonce") or "")
        kind = payload.get("type")
        data = payload.get("data") or {}
        channel_id = str(payload.get("channel_id") or "")
        if not nonce or not payload.get("session_id"):
            return _error(400, "Invalid Form Body", 50035)
        self.world.stats[f"interactions_received:{kind}"] += 1
        if channel_id not in user.channel_ids:
            return _error(403, "Missing Access", 50001)
        interaction_id = self.world.snowflake()
        if kind == 2:
            app_id = str(payload.get("application_id") or "")
            key = f"{app_id}:{data.get('name')}"
            if self.command_ids.get(key) != data.get("id") or (
                self.world.command_versions.get(key) != data.get("version")
            ):
                self.world.stats["outdated_commands"] += 1
                return _error(
                    400,
                    "Invalid Form Body",
                    50035,
                    errors={
                        "data": {
                            "_errors": [
                                {
                                    "code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION",
                                    "message": "This command is outdated.",
                                }
                            ]
                        }
                    },
                )
            options = {str(o["name"]): o.get("value") for o in data.get("options") or []}
            attachments = {}
            for item in data.get("attachments") or []:
                blob = self.world.uploads.get(str(item.get("uploaded_filename", "")))
                if blob is None:
                    return _error(400, "Invalid Form Body", 50035)
                stored = self.store_cdn(channel_id, str(item.get("filename", "image.png")), blob)
                attachments[str(item["id"])] = stored["url"]
            if await self._acknowledge(user, interaction_id, nonce):
                self.bot.spawn(
                    self.bot.on_command(
                        user,
                        app_id,
                        channel_id,
                        nonce,
                        interaction_id,
                        str(data.get("name")),
                        options,
                        attachments,
                    )
                )
        elif kind == 3:
            message = self.world.channel(channel_id).get(str(payload.get("message_id") or ""))
            custom_id = str(data.get("custom_id") or "")
            known = message is not None and any(
                button.get("custom_id") == custom_id
                for row in message.get("components", [])
                for button in row.get("components", [])
            )
            if message is None or not known:
                return _error(400, "Invalid Form Body", 50035)
            if await self._acknowledge(user, interaction_id, nonce):
                self.bot.spawn(
                    self.bot.on_button(user, channel_id, nonce, interaction_id, message, custom_id)
                )
        elif kind == 5:
            modal = self.world.modals.pop(str(data.get("id") or ""), None)
            if modal is None or modal["custom_id"] != data.get("custom_id"):
                return _error(400, "Invalid Form Body", 50035)
            values = {
                str(field.get("custom_id")): str(field.get("value", ""))
                for row in data.get("components") or []
                for field in row.get("components") or []
            }
            if await self._acknowledge(user, interaction_id, nonce):
                self.bot.spawn(
                    self.bot.on_modal(user, channel_id, nonce, interaction_id, modal, values)
                )
        else:
            return _error(400, "Invalid Form Body", 50035)
        if user.interaction_errors > 0:
            user.interaction_errors -= 1
            self.world.stats[f"interaction_errors:{user.interaction_error}"] += 1
            return _error(user.interaction_error, "Internal Server Error")
        return web.Response(status=204)

    async def _acknowledge(self, user: FakeUser, interaction_id: str, nonce: str) -> bool:
        """Tell the user's sessions the interaction was created and whether the bot took it.
        False when the bot is offline (the caller then does not hand it to the bot)."""
        # Only interactions Discord accepted count: a rejected one (stale command version,
        # unknown button) did nothing, and may be sent again.
        self.world.nonces[nonce] += 1
        await self.dispatch_user(user, "INTERACTION_CREATE", {"id": interaction_id, "nonce": nonce})
        outcome = "INTERACTION_FAILURE" if user.bot_offline else "INTERACTION_SUCCESS"
        await self.dispatch_user(user, outcome, {"id": interaction_id, "nonce": nonce})
        return not user.bot_offline

    async def attachment_slots(self, request: web.Request) -> web.Response:
        body = await request.json()
        slots = []
        for item in body.get("files") or []:
            token = uuid.uuid4().hex
            filename = str(item.get("filename", "image.png"))
            slots.append(
                {
                    "id": item.get("id", "0"),
                    "upload_url": f"{self.base_url}/upload/{token}/{filename}",
                    "upload_filename": f"{token}/{filename}",
                }
            )
        return web.json_response({"attachments": slots})

    async def upload(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['token']}/{request.match_info['filename']}"
        self.world.uploads[key] = await request.read()
        self.world.stats["uploads"] += 1
        return web.Response(status=200)

    async def list_messages(self, request: web.Request) -> web.Response:
        """Newest first; ``around`` centres the page on a message, as Discord does (with a
        limit of 1, that message alone; an unknown id, an empty page)."""
        channel = self.world.channel(request.match_info["channel"])
        limit = min(100, int(request.query.get("limit", "50")))
        messages = list(channel.values())
        around = request.query.get("around")
        if around is not None:
            ids = [str(message.get("id")) for message in messages]
            if around not in ids:
                return web.json_response([])
            at = ids.index(around)
            before = (limit - 1) // 2 if limit > 1 else 0
            page = messages[max(0, at - before) : at - before + limit if at >= before else limit]
            return web.json_response([self._public(m) for m in reversed(page)])
        newest_first = list(reversed(messages))[:limit]
        return web.json_response([self._public(message) for message in newest_first])

    async def get_message(self, request: web.Request) -> web.Response:
        # Get Channel Message is for bots only: every token of this fake is a user's, as the
        # engine's accounts are, and Discord refuses those.
        return _error(403, "Only bots can use this endpoint", 20002)

    async def create_message(self, request: web.Request) -> web.Response:
        user: FakeUser = request[USER]
        channel_id = request.match_info["channel"]
        if channel_id not in user.channel_ids:
            return _error(403, "Missing Access", 50001)
        body = await request.json()
        attachments = []
        for item in body.get("attachments") or []:
            blob = self.world.uploads.get(str(item.get("uploaded_filename", "")))
            if blob is None:
                return _error(400, "Invalid Form Body", 50035)
            attachments.append(self.store_cdn(channel_id, str(item.get("filename")), blob))
        message = await self.post_message(
            channel_id,
            author_id=user.id,
            content=str(body.get("content", "")),
            nonce=str(body.get("nonce", "")),
            attachments=attachments,
        )
        return web.json_response(self._public(message))

    async def react(self, request: web.Request) -> web.Response:
        user: FakeUser = request[USER]
        message = self.world.channel(request.match_info["channel"]).get(
            request.match_info["message"]
        )
        if message is None:
            return _error(404, "Unknown Message", 10008)
        if unquote(request.match_info["emoji"]) == "✉️":
            self.bot.spawn(self.bot.on_envelope(user, message))
        return web.Response(status=204)

    async def open_dm(self, request: web.Request) -> web.Response:
        return web.json_response({"id": self.dm_channel(request[USER]), "type": 1})

    async def cdn(self, request: web.Request) -> web.Response:
        data = self.world.cdn.get(request.path)
        if data is None:
            return web.Response(status=404)
        if not self._link_valid(request.path, parse_qs(request.query_string)):
            self.world.stats["cdn_expired"] += 1
            return web.Response(status=404, text=CONTENT_GONE)
        self.world.stats["cdn_downloads"] += 1
        kind = "video/mp4" if request.path.endswith(".mp4") else "image/png"
        return web.Response(body=data, content_type=kind)

    async def inpaint(self, request: web.Request) -> web.Response:
        body = await request.json()
        token = str(body.get("customId", "")).removeprefix("MJ::iframe::")
        modal = self.world.modals.pop(f"iframe:{token}", None)
        user = self.world.user_by_id(str(body.get("userId", "")))
        if modal is None or user is None or user.id != modal["user_id"]:
            return web.json_response({"success": False, "message": "Unknown job"}, status=400)
        mask = str(body.get("mask", "")).split(",")[-1]
        try:
            if not base64.b64decode(mask, validate=True).startswith(b"\x89PNG"):
                raise ValueError("not a PNG")
        except ValueError:
            return web.json_response({"success": False, "message": "Bad mask"}, status=400)
        self.world.stats["inpaint_submits"] += 1
        self.bot.spawn(self.bot.on_inpaint(user, modal, str(body.get("prompt", ""))))
        return web.json_response({"success": True})

    # --- control ------------------------------------------------------------------------------

    async def control_user(self, request: web.Request) -> web.Response:
        """Create or change a user: ``{"token", "channel_ids", "guild_id", …trouble flags}``."""
        body = await request.json()
        token = str(body["token"])
        user = self.world.users.get(token)
        if user is None:
            user = FakeUser(
                token=token,
                id=self.world.snowflake(),
                username=str(body.get("username", f"user{len(self.world.users) + 1}")),
                guild_id=str(body.get("guild_id", "1")),
                channel_ids=set(),
            )
            self.world.users[token] = user
        for key in (
            "revoked",
            "fast_exhausted",
            "captcha",
            "banned",
            "subscribed",
            "rate_limit_global",
            "bot_offline",
            "remix",
        ):
            if key in body:
                setattr(user, key, bool(body[key]))
        for key, cast in (
            ("queue_limit", int),
            ("rate_limit", int),
            ("retry_after", float),
            ("interaction_errors", int),
            ("interaction_error", int),
        ):
            if key in body:
                setattr(user, key, cast(body[key]))
        if "mode" in body:
            user.mode = str(body["mode"])
        if "channel_ids" in body:
            user.channel_ids = {str(channel) for channel in body["channel_ids"]}
        return web.json_response({"id": user.id, "token": user.token})

    async def control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.world.counts())

    async def control_drop(self, request: web.Request) -> web.Response:
        """Drop gateway connections: ``{"token": …, "how": "close"|"reconnect"|"invalidate"|
        "auth"}`` (``auth``: closed with 4004, as Discord ends the sessions of a reset token)."""
        body = await request.json() if request.can_read_body else {}
        how = body.get("how", "close")
        dropped = 0
        for session in list(self.world.sessions.values()):
            if body.get("token") and session.user.token != body["token"]:
                continue
            ws = session.ws
            if ws is None or ws.closed:
                continue
            dropped += 1
            if how == "reconnect":
                await ws.send_json({"op": 7, "d": None, "s": None, "t": None})
            elif how == "invalidate":
                session.invalid = True
                await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            elif how == "auth":
                # A reset token's session: closed with 4004, never resumable.
                session.invalid = True
                session.ws = None
                await ws.close(code=4004, message=b"Authentication failed.")
            else:
                session.ws = None
                await ws.close(code=4000, message=b"Unknown error")
        self.world.stats[f"drops:{how}"] += dropped
        return web.json_response({"dropped": dropped})

    async def control_frames(self, request: web.Request) -> web.Response:
        """Odd gateway frames for a user's sessions: ``{"token", "raw": [text, …]}`` sends
        each text as it is to the live sockets (garbage, a frame that is not an object, an
        unknown opcode: no sequence number, not replayed); ``"dispatches": [{"t", "d"}, …]``
        sends dispatches of the session (sequenced and kept for a resume, as Discord's own odd
        payloads would be: ``d`` of any type); ``"garble": n`` cuts the session's next n
        dispatches short on the wire (the backlog keeps them whole; 0 stops it)."""
        body = await request.json()
        sessions = [
            session
            for session in self.world.sessions.values()
            if session.user.token == body.get("token") and not session.invalid
        ]
        for session in sessions:
            if "garble" in body:
                session.garble = int(body["garble"])
            for text in body.get("raw") or []:
                if session.ws is None or session.ws.closed:
                    break  # the client hung up meanwhile
                self.world.stats["raw_frames"] += 1
                try:
                    await session.ws.send_str(str(text))
                except (ConnectionError, RuntimeError):
                    break
            for item in body.get("dispatches") or []:
                await self.send(session, str(item.get("t")), item.get("d"))
        return web.json_response({"sessions": len(sessions)})

    async def control_cdn_clock(self, request: web.Request) -> web.Response:
        """``{"advance": seconds}``: the CDN's clock runs that much further ahead, so links
        issued earlier expire as they would after that long (REST reads name fresh ones)."""
        body = await request.json()
        self.cdn_clock += float(body.get("advance", 0))
        return web.json_response({"clock": self.cdn_clock})

    async def control_bump(self, request: web.Request) -> web.Response:
        """Publish new versions of every command (as a bot update does)."""
        for key in self.world.command_versions:
            self.world.command_versions[key] = self.world.snowflake()
        return web.json_response({"ok": True})


async def serve(discord: FakeDiscord, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(discord.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    discord.base_url = f"http://{host}:{bound}"
    return runner
