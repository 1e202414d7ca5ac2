-- One row the server writes to learn that the catalog can write again after
-- failing (a full disk, say) while nothing else writes to it.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
) STRICT;
