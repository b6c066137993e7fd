// An application service built on matrix-bot-sdk (appservice mode), driven
// by tests/appservice.rs: when one of its ghosts (@sdk_*) is invited, the
// ghost's intent registers it (when the homeserver asks about the user, or
// else on the invite), joins, sets its display name and speaks; it
// prints the messages it receives. One line per step on standard output
// ("ready", "registered", "ghost-sent", "message", "error").
//
// Usage: node bot.js HOMESERVER_URL PORT AS_TOKEN HS_TOKEN SERVER_NAME
// matrix-bot-sdk is found through NODE_PATH (installed outside the clone,
// see .ci/run).
"use strict";

const { Appservice, LogLevel, LogService, MemoryStorageProvider } = require("matrix-bot-sdk");

const [homeserverUrl, port, asToken, hsToken, serverName] = process.argv.slice(2);

function say(line) {
    process.stdout.write(`${line}\n`);
}

function reason(error) {
    if (error && error.body) {
        return JSON.stringify(error.body);
    }
    return String((error && error.message) || error);
}

// The library's own log goes to standard error, errors only.
LogService.setLevel(LogLevel.ERROR);

const appservice = new Appservice({
    port: Number(port),
    bindAddress: "127.0.0.1",
    homeserverName: serverName,
    homeserverUrl,
    storage: new MemoryStorageProvider(),
    registration: {
        id: "bot-sdk-test",
        url: `http://127.0.0.1:${port}`,
        as_token: asToken,
        hs_token: hsToken,
        sender_localpart: "sdkbot",
        namespaces: { users: [{ exclusive: true, regex: "@sdk_.*" }], aliases: [], rooms: [] },
        rate_limited: false,
    },
});

// The homeserver asks about a ghost it does not know before it pushes
// events naming it: the library registers the ghost through its intent
// when the answer is an object.
// Spec: https://spec.matrix.org/latest/application-service-api/#get_matrixappv1usersuserid
appservice.on("query.user", (userId, createUser) => {
    say(`user-query ${userId}`);
    createUser({ display_name: "A new ghost" });
});

appservice.on("room.invite", async (roomId, event) => {
    const ghost = event.state_key;
    if (!appservice.isNamespacedUser(ghost)) {
        return;
    }
    try {
        const intent = appservice.getIntentForUserId(ghost);
        await intent.ensureRegistered();
        say(`registered ${ghost}`);
        await intent.joinRoom(roomId);
        await intent.underlyingClient.setDisplayName("Ghost of the SDK");
        const eventId = await intent.sendText(roomId, "hello from the bot-sdk ghost");
        say(`ghost-sent ${eventId}`);
    } catch (error) {
        say(`error ${reason(error)}`);
    }
});

appservice.on("room.message", (roomId, event) => {
    if (event.content && typeof event.content.body === "string") {
        say(`message ${event.content.body}`);
    }
});

appservice.begin().then(
    () => say("ready"),
    (error) => say(`error ${reason(error)}`),
);
