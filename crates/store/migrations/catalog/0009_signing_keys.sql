-- Ed25519 keys that sign the tenant context the gateway hands upstreams.
-- A new key is published (in the JWKS) before it signs, and the key it
-- replaces stays published until every context it signed has expired.

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    seed        BLOB NOT NULL CHECK (length(seed) = 32),   -- the private key
    created_at  INTEGER NOT NULL,
    signs_from  INTEGER NOT NULL,
    retires_at  INTEGER                                     -- NULL while no successor exists
) STRICT;
