-- Operators read the proposals waiting for them across every tenant, oldest
-- first; this index keeps that page a range scan over the waiting ones only.
CREATE INDEX policy_versions_waiting ON policy_versions (created_at, tenant_id)
    WHERE status = 'proposed';
