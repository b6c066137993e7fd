#!/usr/bin/env python3
"""End-to-end encryption driven by matrix-nio[e2e] (vodozemac inside): the server only
relays keys and ciphertext, the clients encrypt and decrypt.

Usage: nio_e2ee.py BASE_URL   (e.g. http://127.0.0.1:8008)

Alice and bob register with encryption on, upload device and one-time keys, share an
encrypted room; alice sends a message (nio queries bob's keys, claims a one-time key,
sends the megolm session over to-device) and bob decrypts it, then bob answers and alice
decrypts that. Exits 0 when every step passed, 1 with the failing step's name otherwise,
2 when matrix-nio[e2e] is missing.
"""

import json
import sys
import tempfile
import urllib.request
from urllib.parse import quote

try:
    import nio
    from nio.crypto import ENCRYPTION_ENABLED
except ImportError:
    ENCRYPTION_ENABLED = False
if not ENCRYPTION_ENABLED:
    print("matrix-nio[e2e] is not installed: python3 -m pip install 'matrix-nio[e2e]==0.26.0'", file=sys.stderr)
    sys.exit(2)

from nio_common import StepFailed, check, close, failed, main, ok, passed, register_pair
from nio_common import sync_until as sync_until_within

# Each wait for something over /sync gives up after this long.
SYNC_DEADLINE_SECONDS = 20
PASSWORD = "nio-e2ee-password"


async def upkeep(client):
    """What sync_forever does between syncs: upload, query and claim keys as needed."""
    if client.should_upload_keys:
        ok(await client.keys_upload(), nio.KeysUploadResponse, f"keys_upload for {client.user_id}")
    if client.should_query_keys:
        ok(await client.keys_query(), nio.KeysQueryResponse, f"keys_query for {client.user_id}")
    if client.should_claim_keys:
        ok(await client.keys_claim(client.get_users_for_key_claiming()), nio.KeysClaimResponse, "keys_claim")
    for message in client.outgoing_to_device_messages:
        ok(await client.to_device(message), nio.ToDeviceResponse, "to_device")


async def sync_until(client, predicate, what):
    """Syncs (long-polling, with key upkeep) until predicate(response) is truthy."""
    return await sync_until_within(client, predicate, what, SYNC_DEADLINE_SECONDS, between=upkeep, timeout=2000)


def decrypted_text(response, room_id, body):
    room = response.rooms.join.get(room_id)
    for event in room.timeline.events if room else []:
        if isinstance(event, nio.RoomMessageText) and event.decrypted and event.body == body:
            return event
        if isinstance(event, nio.MegolmEvent):
            print(f"undecryptable event {event.event_id}: session {event.session_id}", file=sys.stderr)
    return None


async def session(base_url):
    stores = tempfile.TemporaryDirectory()
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    alice = nio.AsyncClient(base_url, "", store_path=stores.name, config=config)
    bob = nio.AsyncClient(base_url, "", store_path=stores.name, config=config)
    step = "register"
    try:
        await register_pair(alice, bob, PASSWORD)

        step = "upload keys"
        for client in (alice, bob):
            ok(await client.sync(timeout=0), nio.SyncResponse, f"first sync of {client.user_id}")
            await upkeep(client)
            check(not client.should_upload_keys, f"{client.user_id} still has keys to upload")
        # The counts /sync reports are what nio tops its one-time keys up from.
        check(bob.olm.uploaded_key_count and bob.olm.uploaded_key_count > 0,
              f"bob's one-time keys were not counted: {bob.olm.uploaded_key_count!r}")

        step = "encrypted room"
        created = ok(
            await alice.room_create(
                name="Secret Den",
                invite=[bob.user_id],
                initial_state=[{"type": "m.room.encryption", "state_key": "",
                                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            ),
            nio.RoomCreateResponse,
            "room_create",
        )
        room_id = created.room_id
        await sync_until(bob, lambda r: room_id in r.rooms.invite, "the invite")
        ok(await bob.join(room_id), nio.JoinResponse, "join")
        await sync_until(bob, lambda r: room_id in r.rooms.join, "the joined room")
        await sync_until(alice, lambda r: bob.user_id in alice.rooms[room_id].users, "bob's join")
        check(alice.rooms[room_id].encrypted, "alice does not see the room as encrypted")
        # Bob's keys changed in a room alice shares: device_lists tells her.
        await sync_until(alice, lambda r: True, "one more sync")

        step = "alice encrypts"
        sent = ok(
            await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "the eagle lands"},
                                  ignore_unverified_devices=True),
            nio.RoomSendResponse,
            "encrypted room_send",
        )
        # nio decrypts what it fetches; ask over plain HTTP what the server holds.
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(sent.event_id, safe='')}"
        request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {alice.access_token}"})
        with urllib.request.urlopen(request) as answer:
            stored = json.load(answer)
        check(stored.get("type") == "m.room.encrypted", f"the server stored {stored.get('type')}")
        check("the eagle lands" not in json.dumps(stored), "the server holds the plaintext")

        step = "bob decrypts"
        await sync_until(bob, lambda r: decrypted_text(r, room_id, "the eagle lands"), "alice's decrypted message")

        step = "bob answers"
        ok(
            await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "copy that"},
                                ignore_unverified_devices=True),
            nio.RoomSendResponse,
            "bob's encrypted room_send",
        )
        await sync_until(alice, lambda r: decrypted_text(r, room_id, "copy that"), "bob's decrypted answer")
        return passed("nio e2ee")
    except StepFailed as failure:
        return failed("nio e2ee", step, failure)
    finally:
        await close(alice, bob)
        stores.cleanup()


if __name__ == "__main__":
    sys.exit(main(session, __doc__))
