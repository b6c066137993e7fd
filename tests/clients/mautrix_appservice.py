#!/usr/bin/env python3
"""An application service built on mautrix-python (the framework most
bridges use), driven by tests/appservice.rs against the real binary.

Usage: mautrix_appservice.py HS_URL AS_PORT AS_TOKEN HS_TOKEN DOMAIN MODE

It serves the Application Service API on 127.0.0.1:AS_PORT and prints one
line per thing it sees or does, flushed at once:
  ready                      the server listens (and, in MODE "first", the
                             ghost @ghost_one is registered)
  bot <user_id>              whoami as the service's own user
  ping <ms>                  the node pinged the service at its request
  event <type> <sender>      every event of every transaction, in order
  message <body>             the body of every m.room.message
  typing <user_id>...        an m.typing ephemeral event: who types now
  presence <user_id> <state> an m.presence ephemeral event
  receipt <type> <event_id> <user_id>...
                             an m.receipt ephemeral event
  ghost-sent <event_id>      the ghost joined the room it was invited to,
                             set its display name and sent a message
  portal <alias> <room_id>   asked for an unknown alias of its namespace
                             (#bridged_*), it created a public room with it
  user-query <user_id>       asked about an unknown user of its namespace,
                             it registered them
  location-query <channel>   asked for the locations of a channel
  error <text>               something failed
In MODE "first" the ghost acts on its invite; in MODE "again" (the service
restarted) it only listens. It runs until it is killed.
"""

import asyncio
import sys

from aiohttp import web

from mautrix.appservice import AppService
from mautrix.appservice.state_store.memory import ASStateStore
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.types import EventType, Membership, RoomCreatePreset


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """Keeps the framework's state in memory (no file left behind)."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


def say(line: str) -> None:
    print(line, flush=True)


async def main() -> None:
    hs_url, as_port, as_token, hs_token, domain, mode = sys.argv[1:7]
    appservice = AppService(
        server=hs_url,
        domain=domain,
        as_token=as_token,
        hs_token=hs_token,
        bot_localpart="bridgebot",
        id="mautrix-test",
        state_store=MemoryASStateStore(),
        ephemeral_events=True,
    )
    ghost_id = f"@ghost_one:{domain}"

    async def act(room_id: str) -> None:
        try:
            ghost = appservice.intent.user(ghost_id)
            await ghost.ensure_joined(room_id)
            await ghost.set_displayname("Ghost One")
            event_id = await ghost.send_text(room_id, "hello from the ghost")
            say(f"ghost-sent {event_id}")
        except Exception as error:  # reported to the test, which fails
            say(f"error {error!r}")

    async def query_alias(alias: str):
        if not alias.startswith("#bridged_"):
            return None
        localpart = alias[1:].split(":", 1)[0]
        room_id = await appservice.intent.create_room(
            alias_localpart=localpart, preset=RoomCreatePreset.PUBLIC, name="Portal"
        )
        say(f"portal {alias} {room_id}")
        return {"room_id": room_id}

    appservice.query_alias = query_alias

    async def query_user(user_id: str):
        await appservice.intent.user(user_id).ensure_registered()
        say(f"user-query {user_id}")
        return {"registered": True}

    appservice.query_user = query_user

    # Third-party lookups (mautrix leaves these routes to the bridge).
    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {hs_token}"

    async def thirdparty_protocol(request: web.Request) -> web.Response:
        if not authorized(request) or request.match_info["protocol"] != "testnet":
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return web.json_response(
            {
                "user_fields": ["nick"],
                "location_fields": ["channel"],
                "icon": "mxc://example.org/icon",
                "field_types": {
                    "nick": {"regexp": ".*", "placeholder": "nick"},
                    "channel": {"regexp": "#.*", "placeholder": "#channel"},
                },
                "instances": [
                    {"desc": "Test network", "network_id": "net1", "fields": {}}
                ],
            }
        )

    async def thirdparty_location(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        channel = request.query.get("channel", "")
        say(f"location-query {channel}")
        return web.json_response(
            [
                {
                    "alias": f"#bridged_{channel}:{domain}",
                    "protocol": "testnet",
                    "fields": {"channel": channel},
                }
            ]
        )

    appservice.app.router.add_get(
        "/_matrix/app/v1/thirdparty/protocol/{protocol}", thirdparty_protocol
    )
    appservice.app.router.add_get(
        "/_matrix/app/v1/thirdparty/location/{protocol}", thirdparty_location
    )

    @appservice.matrix_event_handler
    async def on_event(event) -> None:
        if event.type == EventType.TYPING:
            say(f"typing {' '.join(event.content.user_ids)}")
            return
        if event.type == EventType.PRESENCE:
            say(f"presence {event.sender} {event.content.presence}")
            return
        if event.type == EventType.RECEIPT:
            for event_id, by_type in event.content.items():
                for receipt_type, users in by_type.items():
                    say(f"receipt {receipt_type} {event_id} {' '.join(users)}")
            return
        say(f"event {event.type} {event.sender}")
        if event.type == EventType.ROOM_MESSAGE:
            say(f"message {event.content.body}")
        if (
            mode == "first"
            and event.type == EventType.ROOM_MEMBER
            and event.state_key == ghost_id
            and event.content.membership == Membership.INVITE
        ):
            asyncio.create_task(act(event.room_id))

    await appservice.start(host="127.0.0.1", port=int(as_port))
    try:
        if mode == "first":
            await appservice.intent.user(ghost_id).ensure_registered()
            whoami = await appservice.intent.whoami()
            say(f"bot {whoami.user_id}")
            duration = await appservice.ping_self("mautrix-test-ping")
            say(f"ping {duration}")
    except Exception as error:
        say(f"error {error!r}")
    say("ready")
    await asyncio.Event().wait()


asyncio.run(main())
