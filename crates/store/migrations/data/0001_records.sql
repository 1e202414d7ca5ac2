-- A data database: collections and records, and each tenant's storage usage.
-- The same schema serves the pooled database (many tenants) and every
-- dedicated one (one tenant): every key leads with tenant_id either way.

CREATE TABLE collections (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    indexes     TEXT NOT NULL,      -- JSON array of declared index field paths
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE records (
    tenant_id   TEXT NOT NULL,
    collection  TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    body        TEXT NOT NULL CHECK (json_valid(body)),
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, collection, id),
    FOREIGN KEY (tenant_id, collection) REFERENCES collections (tenant_id, name) ON DELETE CASCADE
) STRICT;

-- Exact storage accounting, updated in the same transaction as every write.
CREATE TABLE usage (
    tenant_id   TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    records     INTEGER NOT NULL CHECK (records >= 0)
) STRICT, WITHOUT ROWID;
