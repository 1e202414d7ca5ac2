-- Plans (tiers), versioned. Editing a plan appends a version; tenants follow
-- a plan's latest version unless pinned to one (`tenants.plan_version`).

CREATE TABLE plan_versions (
    plan_id     TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    manifest    TEXT NOT NULL,      -- JSON: the whole plan
    diff        TEXT NOT NULL,      -- JSON: settings changed from the version before
    reason      TEXT NOT NULL,
    actor_key   TEXT,               -- NULL when seeded from the configuration
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (plan_id, version)
) STRICT, WITHOUT ROWID;

ALTER TABLE tenants ADD COLUMN plan_version INTEGER;
