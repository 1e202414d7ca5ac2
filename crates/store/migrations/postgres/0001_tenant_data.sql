-- Tenant data on PostgreSQL, applied to the pooled schema `tenantd`, to every
-- tenant's own schema, and to every dedicated database's `tenantd` schema
-- (the search path names the schema; no name here is qualified). Every table
-- is keyed by tenant_id and guarded a second time by row-level security,
-- ENABLEd and FORCEd so that it binds the tables' owner too. The application
-- connects as a role that is neither owner, superuser nor BYPASSRLS (checked
-- at start).
--
-- The tenant is set per transaction with set_config('app.tenant_id', $1, true).
-- The policies read it once per query through a subselect; when it is unset
-- it is NULL or '', which no row matches: access fails closed.
--
-- Names and ids compare byte by byte (COLLATE "C"), as on SQLite, so that
-- pages come in the same order on every engine.

CREATE TABLE collections (
    tenant_id   text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    indexes     jsonb NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE records (
    tenant_id   text COLLATE "C" NOT NULL,
    collection  text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    version     bigint NOT NULL CHECK (version > 0),
    body        jsonb NOT NULL,
    size        bigint NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, collection, id),
    FOREIGN KEY (tenant_id, collection) REFERENCES collections (tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE usage (
    tenant_id   text COLLATE "C" PRIMARY KEY,
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    records     bigint NOT NULL CHECK (records >= 0)
);

ALTER TABLE collections ENABLE ROW LEVEL SECURITY;
ALTER TABLE collections FORCE ROW LEVEL SECURITY;
ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
ALTER TABLE usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON collections
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
CREATE POLICY tenant_isolation ON records
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
CREATE POLICY tenant_isolation ON usage
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
