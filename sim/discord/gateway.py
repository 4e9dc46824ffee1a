"""The simulated gateway: HELLO, heartbeat ACK, IDENTIFY → READY + GUILD_CREATE, RESUME with
replay of missed events, intent filtering, and test hooks to drop or reconnect the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .recorder import GatewayFrame

if TYPE_CHECKING:
    from .server import DiscordSimulator


class Intents:
    """Gateway intent bits (Discord's values)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


# Which intent a guild event needs; (guild intent, DM intent) for message events.
_GUILD_EVENT_INTENT = {
    "GUILD_CREATE": Intents.GUILDS,
    "GUILD_UPDATE": Intents.GUILDS,
    "GUILD_ROLE_CREATE": Intents.GUILDS,
    "GUILD_ROLE_UPDATE": Intents.GUILDS,
    "GUILD_ROLE_DELETE": Intents.GUILDS,
    "CHANNEL_CREATE": Intents.GUILDS,
    "CHANNEL_UPDATE": Intents.GUILDS,
    "CHANNEL_DELETE": Intents.GUILDS,
    "GUILD_MEMBER_ADD": Intents.GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": Intents.GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": Intents.GUILD_MEMBERS,
}
_MESSAGE_EVENT_INTENT = {
    "MESSAGE_CREATE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_DELETE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (Intents.GUILD_MESSAGE_REACTIONS, Intents.DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (Intents.GUILD_MESSAGE_REACTIONS, Intents.DIRECT_MESSAGE_REACTIONS),
}

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = (
    6,
    7,
    8,
    9,
    10,
    11,
)


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    session: GatewaySession | None = None


@dataclass
class GatewaySession:
    """An identified gateway session; it outlives its connection so it can be resumed."""

    session_id: str
    intents: int
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    connection: _Connection | None = None
    resumes: int = 0

    @property
    def connected(self) -> bool:
        """Whether a websocket is attached right now."""
        return self.connection is not None


class Gateway:
    """Websocket endpoint and event dispatcher of the simulator."""

    REPLAY_BUFFER = 1000

    def __init__(self, sim: DiscordSimulator, heartbeat_interval_ms: int = 41250) -> None:
        self.sim = sim
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, GatewaySession] = {}
        self._connections: set[_Connection] = set()
        self._resume_gate: asyncio.Event | None = None

    # ---- state helpers -------------------------------------------------------------------
    @property
    def active_sessions(self) -> list[GatewaySession]:
        """Sessions that receive events (connected or waiting to resume)."""
        return list(self.sessions.values())

    @property
    def connected(self) -> bool:
        """Whether at least one identified session has a live websocket."""
        return any(s.connected for s in self.sessions.values())

    # ---- dispatch ------------------------------------------------------------------------
    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a dispatch event to every session whose intents cover it (buffered for RESUME)."""
        self.sim.check_event(event, data)
        for session in self.sessions.values():
            payload = self._filter(session, event, data)
            if payload is None:
                continue
            session.seq += 1
            frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": payload}
            session.buffer.append(frame)
            del session.buffer[: -self.REPLAY_BUFFER]
            if session.connection is not None:
                session.connection.queue.put_nowait(frame)

    def _filter(self, session: GatewaySession, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Apply intents: drop events the session did not ask for, strip content without
        MESSAGE_CONTENT (unless the bot wrote the message, is mentioned, or it is a DM)."""
        intents = session.intents
        needed = _GUILD_EVENT_INTENT.get(event)
        if needed is not None and not intents & needed:
            return None
        pair = _MESSAGE_EVENT_INTENT.get(event)
        if pair is not None:
            in_guild = data.get("guild_id") is not None
            if not intents & (pair[0] if in_guild else pair[1]):
                return None
            if (
                event in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
                and in_guild
                and not intents & Intents.MESSAGE_CONTENT
            ):
                bot_id = str(self.sim.bot_user.id)
                author_id = (data.get("author") or {}).get("id")
                mentioned = f"<@{bot_id}>" in (data.get("content") or "")
                if author_id != bot_id and not mentioned:
                    data = dict(data)
                    data.update(content="", embeds=[], attachments=[], components=[])
                    data.pop("poll", None)
        return data

    # ---- test hooks ----------------------------------------------------------------------
    async def drop(self, code: int = 4000) -> None:
        """Close every live connection with ``code`` (4000 lets discord.py RESUME)."""
        conns = list(self._connections)
        for conn in conns:  # detach first: from now on events are buffered for the RESUME
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=b"dropped by the simulator")

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT to every live connection (the client resumes on a new socket)."""
        for conn in list(self._connections):
            conn.queue.put_nowait({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    def hold_resumes(self) -> None:
        """Park incoming RESUMEs until :meth:`release_resumes` (events dispatched meanwhile are
        buffered, so a test can assert that missed events are replayed)."""
        self._resume_gate = asyncio.Event()

    def release_resumes(self) -> None:
        """Let parked RESUMEs proceed."""
        if self._resume_gate is not None:
            self._resume_gate.set()
            self._resume_gate = None

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets op 9 and the client must IDENTIFY again."""
        self.sessions.clear()

    async def close(self) -> None:
        """Close all sockets (server shutdown)."""
        self.release_resumes()
        await self.drop(code=1001)

    # ---- websocket handler ---------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``/gateway``."""
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        conn = _Connection(ws=ws)
        self._connections.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        conn.queue.put_nowait(
            {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        frame = json.loads(msg.data)
                    except ValueError:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    self._record("recv", frame, conn)
                    await self._on_frame(conn, frame)
                elif msg.type is WSMsgType.BINARY:
                    # We never negotiate ETF; a binary frame is a client bug here.
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                else:
                    break
        finally:
            self._connections.discard(conn)
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        return ws

    async def _writer(self, conn: _Connection) -> None:
        while True:
            frame = await conn.queue.get()
            if frame is None or conn.ws.closed:
                return
            try:
                await conn.ws.send_str(json.dumps(frame, ensure_ascii=False))
            except (ConnectionResetError, RuntimeError):
                return
            self._record("send", frame, conn)

    def _record(self, direction: str, frame: dict[str, Any], conn: _Connection) -> None:
        self.sim.recorder.add_frame(
            GatewayFrame(
                direction=direction,
                op=frame.get("op"),
                t=frame.get("t"),
                s=frame.get("s"),
                d=frame.get("d"),
                session_id=conn.session.session_id if conn.session else None,
                raw=frame,
            )
        )

    async def _on_frame(self, conn: _Connection, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == OP_HEARTBEAT:
            conn.queue.put_nowait({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        elif op in (OP_PRESENCE, OP_VOICE):
            if conn.session is None:
                await conn.ws.close(code=4003, message=b"Not authenticated.")
        elif op == OP_REQUEST_MEMBERS:
            if conn.session is None:
                await conn.ws.close(code=4003, message=b"Not authenticated.")
                return
            self._members_chunk(conn.session, data or {})
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        token = str(token or "")
        token = token.removeprefix("Bot ")
        return token == self.sim.bot_token

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & Intents.PRIVILEGED & ~self.sim.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = GatewaySession(session_id=secrets.token_hex(16), intents=intents, connection=conn)
        self.sessions[session.session_id] = session
        conn.session = session
        session.seq += 1
        ready = {"op": OP_DISPATCH, "t": "READY", "s": session.seq, "d": self.sim.ready_payload(session)}
        session.buffer.append(ready)
        conn.queue.put_nowait(ready)
        for guild in self.sim.guilds.values():
            full = self.sim.guild_create_payload(guild)
            self.sim.check_event("GUILD_CREATE", full)
            payload = self._filter(session, "GUILD_CREATE", full)
            if payload is None:
                continue
            session.seq += 1
            frame = {"op": OP_DISPATCH, "t": "GUILD_CREATE", "s": session.seq, "d": payload}
            session.buffer.append(frame)
            conn.queue.put_nowait(frame)

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        gate = self._resume_gate
        if gate is not None:
            await gate.wait()
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not self._token_ok(data.get("token")):
            # d=false: the session cannot be resumed, the client must IDENTIFY again.
            conn.queue.put_nowait({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        old = session.connection
        if old is not None and old is not conn:
            with contextlib.suppress(Exception):
                await old.ws.close(code=4000)
        session.connection = conn
        conn.session = session
        session.resumes += 1
        last = int(data.get("seq") or 0)
        for frame in session.buffer:
            if frame["s"] is not None and frame["s"] > last:
                conn.queue.put_nowait(frame)
        session.seq += 1
        resumed = {"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["simulator"]}}
        session.buffer.append(resumed)
        conn.queue.put_nowait(resumed)

    def _members_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.sim.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or session.connection is None:
            return
        whole_list = not data.get("user_ids") and not data.get("query")
        if whole_list and not session.intents & Intents.GUILD_MEMBERS:
            # Docs: the GUILD_MEMBERS intent is required to request the entire member list; without it
            # Discord sends no chunk at all (discord-api-docs#5855).
            return
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        elif data.get("query"):
            members = [m for m in members if m.user.username.startswith(str(data["query"]))]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.to_dict() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": "GUILD_MEMBERS_CHUNK", "s": session.seq, "d": chunk}
        session.buffer.append(frame)
        session.connection.queue.put_nowait(frame)
