// matrix-bot-sdk loads its end-to-end encryption library (a native module
// that an install script downloads from outside the npm registry) whenever
// it is loaded, and uses it only for encrypted rooms. The test bot
// (../bot.js) encrypts nothing: any use of this module fails loudly.
"use strict";

function absent(name) {
    return function () {
        throw new Error(`end-to-end encryption (${name}) is not available to the test bot`);
    };
}

module.exports = new Proxy({}, {
    get(_target, name) {
        if (typeof name !== "string" || name === "then" || name === "__esModule") {
            return undefined;
        }
        return absent(name);
    },
});
