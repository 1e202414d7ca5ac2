-- The fingerprint of the server secret the catalog's keys were made with
-- (an HMAC of a fixed label, revealing nothing of the secret), so that a
-- server started with another secret is refused instead of failing every key.
CREATE TABLE server_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;
