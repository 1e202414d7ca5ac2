-- Tamper evidence for the audit log. Each entry's digest (SHA-256 over its
-- sequence number and every field) is chained twice: globally, in sequence
-- order, and per tenant, so that a tenant's admin can verify its own trail
-- without reading anyone else's. Entries may be removed only by a tenant's
-- purge, which the (platform) purge entry records; anything else that edits,
-- removes, inserts or reorders entries breaks a chain.

ALTER TABLE audit_log ADD COLUMN request_id TEXT;
-- SHA-256 (hex) of the changed object's JSON before and after the change.
ALTER TABLE audit_log ADD COLUMN before_digest TEXT;
ALTER TABLE audit_log ADD COLUMN after_digest TEXT;

CREATE TABLE audit_chain (
    seq          INTEGER PRIMARY KEY,
    tenant_id    TEXT,
    digest       BLOB NOT NULL,
    tenant_hash  BLOB NOT NULL,
    global_hash  BLOB NOT NULL
) STRICT;

CREATE INDEX audit_chain_by_tenant ON audit_chain (tenant_id, seq);

CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'audit_chain is append-only');
END;

-- Finds a tenant's last purge (where its chain restarts) without scanning
-- every platform entry.
CREATE INDEX audit_log_purges ON audit_log (target, seq)
    WHERE tenant_id IS NULL AND action = 'tenant.purge';
