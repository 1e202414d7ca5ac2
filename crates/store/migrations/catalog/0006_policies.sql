-- Tenant policies: every change to a tenant's overrides of its plan is a new,
-- immutable version. Only a version's status moves (a proposal is approved,
-- rejected or withdrawn; an applied version is reverted); its content never
-- changes. `tenants.policy_version` names the version in effect (0: none).

ALTER TABLE tenants ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE policy_versions (
    tenant_id       TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    status          TEXT NOT NULL CHECK (status IN
                        ('proposed', 'applied', 'approved', 'rejected', 'withdrawn', 'reverted')),
    plan            TEXT NOT NULL,      -- the plan the overrides were made against
    overrides       TEXT NOT NULL,      -- JSON
    effective       TEXT NOT NULL,      -- JSON: the whole effective plan
    diff            TEXT NOT NULL,      -- JSON: settings changed from the version in effect
    reason          TEXT NOT NULL,
    actor_key       TEXT NOT NULL,
    actor_role      TEXT NOT NULL,
    based_on        INTEGER NOT NULL,   -- the version in effect when it was made
    reverts_to      INTEGER,            -- set when it restores an earlier version's content
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    decided_by      TEXT,
    decision_reason TEXT,
    PRIMARY KEY (tenant_id, version)
) STRICT, WITHOUT ROWID;

-- At most one proposal waits per tenant.
CREATE UNIQUE INDEX policy_versions_one_proposal ON policy_versions (tenant_id)
    WHERE status = 'proposed';
