-- The control-plane catalog: tenants, API keys and the audit log.
-- Instants are integer nanoseconds since the Unix epoch (UTC).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    region      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
) STRICT;

CREATE INDEX tenants_deleted_at ON tenants (deleted_at) WHERE deleted_at IS NOT NULL;

-- A key belongs to the platform (tenant_id NULL, role operator) or to one
-- tenant (any other role). Only an HMAC of the secret is kept.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('operator', 'admin', 'developer', 'reader')),
    name          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL CHECK (length(secret_hash) = 32),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    rotated_from  TEXT,
    CHECK ((tenant_id IS NULL) = (role = 'operator'))
) STRICT;

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

-- Append-only record of every control-plane change. tenant_id is NULL for
-- platform-level events (for example operator keys, or a tenant's purge).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT,
    at          INTEGER NOT NULL,
    actor_key   TEXT,
    actor_role  TEXT,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    details     TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
