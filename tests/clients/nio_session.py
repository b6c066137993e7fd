#!/usr/bin/env python3
"""A full client session driven by matrix-nio, a Matrix client library we did not write.

Usage: nio_session.py BASE_URL   (e.g. http://127.0.0.1:8008)

Two users register, create a room, invite, join, talk, edit, react, redact, rename,
type, read, resolve the alias, find the room in the public directory, share a file, and leave.
Each step asserts what a real client would rely on. Exits 0 when every step passed,
1 with the failing step's name otherwise, 2 when matrix-nio is missing.
"""

import io
import sys

try:
    import nio
except ImportError:
    print("matrix-nio is not installed: python3 -m pip install 'matrix-nio==0.26.0'", file=sys.stderr)
    sys.exit(2)

from nio_common import StepFailed, check, close, failed, main, ok, passed, register_pair
from nio_common import sync_until as sync_until_within

# Each wait for an event over /sync gives up after this long.
SYNC_DEADLINE_SECONDS = 15
PASSWORD = "nio-secret-password"


async def sync_until(client, predicate, what):
    """Syncs (long-polling) until predicate(sync_response) is truthy; returns its value."""
    return await sync_until_within(
        client, predicate, what, SYNC_DEADLINE_SECONDS, timeout=3000, full_state=False
    )


def timeline_events(response, room_id):
    room = response.rooms.join.get(room_id)
    return room.timeline.events if room else []


def ephemeral_events(response, room_id):
    room = response.rooms.join.get(room_id)
    return room.ephemeral if room else []


def find_event(response, room_id, test):
    return next((event for event in timeline_events(response, room_id) if test(event)), None)


async def session(base_url):
    alice = nio.AsyncClient(base_url, "")
    bob = nio.AsyncClient(base_url, "")
    try:
        step = "register"
        suffix = await register_pair(alice, bob, PASSWORD)
        check(alice.access_token and alice.user_id.startswith("@alice"), "alice has no session")
        server_name = alice.user_id.split(":", 1)[1]
        ok(await alice.sync(timeout=0), nio.SyncResponse, "alice first sync")
        ok(await bob.sync(timeout=0), nio.SyncResponse, "bob first sync")

        step = "create room"
        alias_local = f"nio-den-{suffix}"
        created = ok(
            await alice.room_create(
                visibility=nio.RoomVisibility.public,
                alias=alias_local,
                name="Nio Den",
                topic="where nio lives",
                preset=nio.RoomPreset.public_chat,
            ),
            nio.RoomCreateResponse,
            "room_create",
        )
        room_id = created.room_id
        await sync_until(alice, lambda r: room_id in r.rooms.join, "the new room")
        check(alice.rooms[room_id].name == "Nio Den", f"room name is {alice.rooms[room_id].name!r}")
        check(alice.rooms[room_id].topic == "where nio lives", "topic missing")

        step = "invite"
        ok(await alice.room_invite(room_id, bob.user_id), nio.RoomInviteResponse, "room_invite")
        await sync_until(bob, lambda r: room_id in r.rooms.invite, "the invite")
        check(room_id in bob.invited_rooms, "the invite is not in bob's invited rooms")

        step = "join"
        ok(await bob.join(room_id), nio.JoinResponse, "join")
        await sync_until(bob, lambda r: room_id in r.rooms.join, "the joined room")
        await sync_until(
            alice,
            lambda r: find_event(r, room_id, lambda e: isinstance(e, nio.RoomMemberEvent)
                                 and e.state_key == bob.user_id and e.membership == "join"),
            "bob's join",
        )
        check(bob.user_id in alice.rooms[room_id].users, "bob is not a member in alice's view")

        step = "send and receive"
        sent = ok(
            await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}),
            nio.RoomSendResponse,
            "room_send",
        )
        message_id = sent.event_id
        received = await sync_until(
            bob, lambda r: find_event(r, room_id, lambda e: e.event_id == message_id), "alice's message"
        )
        check(isinstance(received, nio.RoomMessageText), f"the message parsed as {type(received).__name__}")
        check(received.body == "hello bob" and received.sender == alice.user_id, "wrong message content")

        step = "edit (m.replace)"
        edit_content = {
            "msgtype": "m.text",
            "body": "* hello bob!",
            "m.new_content": {"msgtype": "m.text", "body": "hello bob!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": message_id},
        }
        edit_id = ok(await alice.room_send(room_id, "m.room.message", edit_content), nio.RoomSendResponse,
                     "edit").event_id
        edit = await sync_until(bob, lambda r: find_event(r, room_id, lambda e: e.event_id == edit_id), "the edit")
        relates = edit.source["content"].get("m.relates_to", {})
        check(relates == {"rel_type": "m.replace", "event_id": message_id}, f"edit relation is {relates}")
        check(edit.source["content"]["m.new_content"]["body"] == "hello bob!", "edit lost m.new_content")

        step = "react (m.annotation)"
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": message_id, "key": "👍"}}
        reaction_id = ok(await bob.room_send(room_id, "m.reaction", reaction), nio.RoomSendResponse,
                         "reaction").event_id
        seen = await sync_until(
            alice, lambda r: find_event(r, room_id, lambda e: e.event_id == reaction_id), "bob's reaction"
        )
        check(isinstance(seen, nio.ReactionEvent), f"the reaction parsed as {type(seen).__name__}")
        check(seen.key == "👍" and seen.reacts_to == message_id, "wrong reaction")

        step = "redact"
        redaction = ok(await alice.room_redact(room_id, message_id, reason="oops"), nio.RoomRedactResponse,
                       "room_redact")
        seen = await sync_until(
            bob, lambda r: find_event(r, room_id, lambda e: e.event_id == redaction.event_id), "the redaction"
        )
        check(isinstance(seen, nio.RedactionEvent), f"the redaction parsed as {type(seen).__name__}")
        check(seen.redacts == message_id and seen.reason == "oops", "wrong redaction")
        fetched = ok(await bob.room_get_event(room_id, message_id), nio.RoomGetEventResponse, "room_get_event")
        check(isinstance(fetched.event, nio.RedactedEvent), f"the redacted message is {fetched.event!r}")
        check(fetched.event.source["content"] == {}, "the redacted message kept its content")

        step = "name and topic"
        ok(await alice.room_put_state(room_id, "m.room.name", {"name": "Nio Burrow"}), nio.RoomPutStateResponse,
           "set name")
        ok(await alice.room_put_state(room_id, "m.room.topic", {"topic": "renamed"}), nio.RoomPutStateResponse,
           "set topic")
        await sync_until(
            bob,
            lambda r: bob.rooms[room_id].name == "Nio Burrow" and bob.rooms[room_id].topic == "renamed",
            "the new name and topic",
        )
        state = ok(await bob.room_get_state_event(room_id, "m.room.name"), nio.RoomGetStateEventResponse,
                   "room_get_state_event")
        check(state.content == {"name": "Nio Burrow"}, f"state content is {state.content}")

        step = "typing"
        ok(await bob.room_typing(room_id, True, timeout=10_000), nio.RoomTypingResponse, "room_typing")
        await sync_until(
            alice,
            lambda r: any(isinstance(e, nio.TypingNoticeEvent) and bob.user_id in e.users
                          for e in ephemeral_events(r, room_id)),
            "bob typing",
        )
        check(bob.user_id in alice.rooms[room_id].typing_users, "typing_users lacks bob")
        ok(await bob.room_typing(room_id, False), nio.RoomTypingResponse, "stop typing")
        await sync_until(
            alice,
            lambda r: any(isinstance(e, nio.TypingNoticeEvent) and bob.user_id not in e.users
                          for e in ephemeral_events(r, room_id)),
            "bob stopping typing",
        )

        step = "receipts"
        ok(await bob.update_receipt_marker(room_id, edit_id), nio.UpdateReceiptMarkerResponse,
           "update_receipt_marker")

        def bobs_receipt(response):
            for event in ephemeral_events(response, room_id):
                if isinstance(event, nio.ReceiptEvent):
                    for receipt in event.receipts:
                        if receipt.user_id == bob.user_id and receipt.event_id == edit_id:
                            return receipt
            return None

        receipt = await sync_until(alice, bobs_receipt, "bob's read receipt")
        check(receipt.receipt_type == "m.read", f"receipt type {receipt.receipt_type}")
        ok(await bob.room_read_markers(room_id, fully_read_event=edit_id, read_event=edit_id),
           nio.RoomReadMarkersResponse, "room_read_markers")

        step = "alias resolve"
        resolved = ok(await bob.room_resolve_alias(f"#{alias_local}:{server_name}"), nio.RoomResolveAliasResponse,
                      "room_resolve_alias")
        check(resolved.room_id == room_id, f"the alias resolved to {resolved.room_id}")

        step = "public directory"
        listing = ok(await bob.list_public_rooms(), nio.responses.PublicRoomsResponse, "list_public_rooms")
        entry = next((room for room in listing.public_rooms if room.room_id == room_id), None)
        check(entry is not None, f"the room is not in the directory: {listing.public_rooms}")
        check(entry.name == "Nio Burrow" and entry.num_joined_members == 2, f"directory entry {entry}")

        step = "media"
        note = b"a note from nio\n" * 1000
        uploaded, _ = await alice.upload(io.BytesIO(note), content_type="text/plain", filename="nio note.txt",
                                         filesize=len(note))
        mxc = ok(uploaded, nio.UploadResponse, "upload").content_uri
        check(mxc.startswith(f"mxc://{server_name}/"), f"content URI {mxc}")
        file_id = ok(
            await alice.room_send(room_id, "m.room.message",
                                  {"msgtype": "m.file", "body": "nio note.txt", "url": mxc,
                                   "info": {"mimetype": "text/plain", "size": len(note)}}),
            nio.RoomSendResponse,
            "send the file",
        ).event_id
        shared = await sync_until(bob, lambda r: find_event(r, room_id, lambda e: e.event_id == file_id), "the file")
        check(isinstance(shared, nio.RoomMessageFile) and shared.url == mxc, f"the file parsed as {shared!r}")
        downloaded = ok(await bob.download(mxc=shared.url), nio.MemoryDownloadResponse, "download")
        check(downloaded.body == note, "the downloaded bytes differ")
        check(downloaded.content_type.startswith("text/plain"), f"content type {downloaded.content_type}")
        check(downloaded.filename == "nio note.txt", f"file name {downloaded.filename!r}")
        media_id = mxc.rsplit("/", 1)[1]
        missing = await bob.thumbnail(server_name, media_id, 32, 32)
        check(isinstance(missing, nio.ThumbnailError), f"a thumbnail of text: {missing!r}")

        step = "leave"
        ok(await bob.room_leave(room_id), nio.RoomLeaveResponse, "room_leave")
        await sync_until(
            alice,
            lambda r: find_event(r, room_id, lambda e: isinstance(e, nio.RoomMemberEvent)
                                 and e.state_key == bob.user_id and e.membership == "leave"),
            "bob's leave",
        )
        await sync_until(bob, lambda r: room_id in r.rooms.leave, "the left room")
        joined = ok(await bob.joined_rooms(), nio.JoinedRoomsResponse, "joined_rooms")
        check(room_id not in joined.rooms, "bob is still joined")
        return passed("nio session")
    except StepFailed as failure:
        return failed("nio session", step, failure)
    finally:
        await close(alice, bob)


if __name__ == "__main__":
    sys.exit(main(session, __doc__))
