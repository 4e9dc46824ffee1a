"""In-memory state of the simulated Discord: users, guilds, channels, roles, members, messages,
synced commands and interactions. Plain dataclasses; the server mutates them and tests read them."""

from __future__ import annotations

import copy
import mimetypes
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .objects import component_out, embed_out, reference_out


# Permission bits used by the simulator (Discord's values).
class Perm:
    """Discord permission bits the simulator checks."""

    ADD_REACTIONS = 1 << 6
    ADMINISTRATOR = 1 << 3
    MANAGE_GUILD = 1 << 5
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MENTION_EVERYONE = 1 << 17
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    USE_EXTERNAL_EMOJIS = 1 << 18
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1


# What @everyone gets in a new server (Discord's default set, minus the voice/admin bits).
DEFAULT_EVERYONE_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.ADD_REACTIONS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)
# The bot's managed role: what a typical invite link for this bot grants.
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | Perm.MANAGE_MESSAGES

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7


@dataclass
class SimUser:
    """A Discord user (bot or human)."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The user object as Discord sends it."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    @property
    def mention(self) -> str:
        """``<@id>``."""
        return f"<@{self.id}>"


@dataclass
class SimRole:
    """A guild role."""

    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False
    mentionable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The role object as Discord sends it."""
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }


@dataclass
class Overwrite:
    """A channel permission overwrite for a role (type 0) or a member (type 1)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The overwrite object as Discord sends it (bit sets as strings)."""
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass
class SimChannel:
    """A channel: guild text (type 0) or DM (type 1)."""

    id: int
    name: str
    type: int = 0
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    recipient: SimUser | None = None
    last_message_id: int | None = None
    overwrites: dict[int, Overwrite] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The channel object as Discord sends it."""
        if self.type == 1:
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": str(self.last_message_id) if self.last_message_id else None,
                "recipients": [self.recipient.to_dict()] if self.recipient else [],
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "permission_overwrites": [o.to_dict() for o in self.overwrites.values()],
            "flags": 0,
        }

    @property
    def mention(self) -> str:
        """``<#id>``."""
        return f"<#{self.id}>"


@dataclass
class SimMember:
    """A user's membership in a guild."""

    user: SimUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> int:
        """The user id."""
        return self.user.id

    def to_dict(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        """The guild member object (``permissions`` only inside interactions)."""
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at.isoformat(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_dict()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class SimGuild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    premium_tier: int = 0
    roles: dict[int, SimRole] = field(default_factory=dict)
    channels: dict[int, SimChannel] = field(default_factory=dict)
    members: dict[int, SimMember] = field(default_factory=dict)
    emojis: dict[int, str] = field(default_factory=dict)  # custom emoji id -> name

    @property
    def everyone(self) -> SimRole:
        """The @everyone role (its id is the guild id)."""
        return self.roles[self.id]

    def role_named(self, name: str) -> SimRole | None:
        """The role called ``name`` (case-sensitive), if any."""
        return next((r for r in self.roles.values() if r.name == name), None)

    def channel_named(self, name: str) -> SimChannel | None:
        """The channel called ``name``, if any."""
        return next((c for c in self.channels.values() if c.name == name), None)

    def permissions_of(self, user_id: int) -> int:
        """Guild-level permissions of a member: owner and Administrator get everything."""
        if user_id == self.owner_id:
            return Perm.ALL
        member = self.members.get(user_id)
        perms = self.everyone.permissions
        if member is not None:
            for rid in member.role_ids:
                role = self.roles.get(rid)
                if role is not None:
                    perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        return perms

    def permissions_in(self, channel: SimChannel, user_id: int) -> int:
        """Channel permissions of a member, as Discord computes them: guild permissions, then the
        channel's @everyone overwrite, the member's roles' overwrites together, the member's own;
        no VIEW_CHANNEL hides the channel (no permission at all), no SEND_MESSAGES takes away what
        only matters when sending."""
        if user_id == self.owner_id or self._is_admin(user_id):
            return Perm.ALL
        perms = self.permissions_of(user_id)
        everyone = channel.overwrites.get(self.id)
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        member = self.members.get(user_id)
        role_ids = set(member.role_ids) if member is not None else set()
        allow = deny = 0
        for ow in channel.overwrites.values():
            if ow.type == 0 and ow.id in role_ids:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        own = channel.overwrites.get(user_id)
        if own is not None and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES:
            perms &= ~(Perm.MENTION_EVERYONE | Perm.SEND_TTS_MESSAGES | Perm.ATTACH_FILES | Perm.EMBED_LINKS)
        return perms

    def _is_admin(self, user_id: int) -> bool:
        member = self.members.get(user_id)
        bits = self.everyone.permissions
        for rid in member.role_ids if member is not None else []:
            role = self.roles.get(rid)
            bits |= role.permissions if role is not None else 0
        return bool(bits & Perm.ADMINISTRATOR)


@dataclass
class SimAttachment:
    """A stored file: its bytes are served by the simulator's CDN."""

    id: int
    filename: str
    data: bytes
    channel_id: int
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False

    def __post_init__(self) -> None:
        if self.content_type is None:
            self.content_type = mimetypes.guess_type(self.filename)[0]

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def path(self) -> str:
        """The CDN path (without host) where the bytes are served."""
        prefix = "ephemeral-attachments" if self.ephemeral else "attachments"
        return f"/{prefix}/{self.channel_id}/{self.id}/{self.filename}"

    def to_dict(self, base_url: str) -> dict[str, Any]:
        """The attachment object as Discord sends it (url on the simulator's CDN)."""
        url = base_url + self.path()
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": url,
            "proxy_url": url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        dims = _image_size(self.data)
        if dims is not None:
            data["width"], data["height"] = dims
        return data


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height when the bytes are an image Pillow can read, as Discord reports them."""
    if not data:
        return None
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


@dataclass
class MessageVersion:
    """One state of a message: as created, then after each edit."""

    content: str
    embeds: list[dict[str, Any]]
    attachments: list[str]
    components: list[dict[str, Any]]
    flags: int
    at: datetime


@dataclass
class SimMessage:
    """A message with its full content, files, reactions and edit history."""

    id: int
    channel_id: int
    guild_id: int | None
    author: SimUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[SimAttachment] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    edited_timestamp: datetime | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    nonce: str | None = None
    tts: bool = False
    # emoji key ("✅" or "name:id") -> (emoji object, user ids in order of reacting)
    reactions: dict[str, tuple[dict[str, Any], list[int]]] = field(default_factory=dict)
    versions: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    # Who the message really pings, resolved as Discord does (content + allowed_mentions + perms).
    mentions: list[SimUser] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user can see the message."""
        return bool(self.flags & MESSAGE_FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether this is a deferred "is thinking…" response not yet filled in."""
        return bool(self.flags & MESSAGE_FLAG_LOADING)

    @property
    def files(self) -> list[tuple[str, bytes]]:
        """``[(filename, bytes)]`` of the attachments."""
        return [(a.filename, a.data) for a in self.attachments]

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button on the message (inside action rows or other containers), in order."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if item.get("type") == 2:
                    found.append(item)
                walk(item.get("components") or [])

        walk(self.components)
        return found

    def reaction_users(self, emoji: str) -> list[int]:
        """User ids that reacted with ``emoji`` (unicode or ``name:id``)."""
        entry = self.reactions.get(emoji)
        return list(entry[1]) if entry else []

    def snapshot(self) -> MessageVersion:
        """The current state as a history entry."""
        return MessageVersion(
            content=self.content,
            embeds=copy.deepcopy(self.embeds),
            attachments=[a.filename for a in self.attachments],
            components=copy.deepcopy(self.components),
            flags=self.flags,
            at=self.edited_timestamp or self.timestamp,
        )

    def to_dict(self, base_url: str, bot_id: int) -> dict[str, Any]:
        """The message object as Discord's REST API returns it."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.to_dict(),
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "edited_timestamp": self.edited_timestamp.isoformat() if self.edited_timestamp else None,
            "tts": self.tts,
            "mention_everyone": self.mention_everyone,
            "mentions": [u.to_dict() for u in self.mentions],
            "mention_roles": [str(r) for r in self.mention_roles],
            "attachments": [a.to_dict(base_url) for a in self.attachments],
            "embeds": [embed_out(e) for e in self.embeds],
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            "components": [component_out(c) for c in self.components],
        }
        if self.reactions:
            data["reactions"] = [
                {
                    "emoji": dict(emoji),
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "burst_colors": [],
                    "me": bot_id in users,
                    "me_burst": False,
                }
                for emoji, users in self.reactions.values()
            ]
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = copy.deepcopy(self.interaction_metadata)
        if self.message_reference is not None:
            data["message_reference"] = reference_out(self.message_reference, self.channel_id, self.guild_id)
        if self.nonce is not None:
            data["nonce"] = self.nonce
        return data


@dataclass
class SimInteraction:
    """An interaction the simulator sent, and what the bot did with it."""

    id: int
    token: str
    type: int  # 2 application command, 3 component, 5 modal submit
    user: SimUser
    channel_id: int
    guild_id: int | None
    data: dict[str, Any]
    created_at: float  # on the simulator clock
    attachment_size_limit: int
    payload: dict[str, Any] = field(default_factory=dict)
    source_message_id: int | None = None  # component interactions: the clicked message
    response_type: int | None = None  # 4, 5, 6, 7, 9 ... once acknowledged
    response_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    triggering: SimInteraction | None = None  # modal submits: the interaction that opened the modal

    @property
    def acked(self) -> bool:
        """Whether an initial response was accepted."""
        return self.response_type is not None

    @property
    def command_name(self) -> str:
        """Full command path for command interactions ("dataset create"), else the custom id."""
        if self.type == 3 or self.type == 5:
            return str(self.data.get("custom_id", ""))
        parts = [str(self.data.get("name", ""))]
        options = self.data.get("options", [])
        while options and options[0].get("type") in (1, 2):
            parts.append(options[0]["name"])
            options = options[0].get("options", [])
        return " ".join(parts)
