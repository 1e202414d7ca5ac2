-- The operators' list of jobs, newest first, over every tenant.
CREATE INDEX jobs_by_time ON jobs (created_at, id);
