"""What the matrix-nio scripts (nio_session.py, nio_e2ee.py) share: step checks,
waiting for something over /sync, registering the two users, and the command line.

Each script checks first that the matrix-nio it needs is installed, then imports this.
"""

import asyncio
import sys
import time
import uuid

import nio


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def ok(response, kind, what):
    check(isinstance(response, kind), f"{what}: expected {kind.__name__}, got {response!r}")
    return response


async def sync_until(client, predicate, what, deadline_seconds, between=None, **sync_args):
    """Syncs (long-polling, with `sync_args`) until predicate(response) is truthy; returns
    its value. `between`, if given, is awaited with the client after each sync."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        response = ok(await client.sync(**sync_args), nio.SyncResponse, f"sync for {what}")
        if between:
            await between(client)
        found = predicate(response)
        if found:
            return found
    raise StepFailed(f"{client.user_id} never saw {what}")


async def register_pair(alice, bob, password):
    """Registers alice and bob (with a random suffix, so reruns never clash); returns the suffix."""
    suffix = uuid.uuid4().hex[:8]
    ok(await alice.register(f"alice{suffix}", password, "nio laptop"), nio.RegisterResponse, "register alice")
    ok(await bob.register(f"bob{suffix}", password, "nio phone"), nio.RegisterResponse, "register bob")
    return suffix


def passed(name):
    print(f"{name}: every step passed")
    return 0


def failed(name, step, failure):
    print(f"{name} failed at step '{step}': {failure}", file=sys.stderr)
    return 1


async def close(*clients):
    for client in clients:
        await client.close()


def main(session, usage):
    """Runs `session(BASE_URL)` from the command line; its result is the exit code."""
    if len(sys.argv) != 2:
        print(usage, file=sys.stderr)
        return 2
    return asyncio.run(session(sys.argv[1]))
