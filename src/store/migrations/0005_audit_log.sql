-- The audit log: one row per state-changing API request (POST, PUT, DELETE, …), whatever its
-- answer. `who` is `master`, `key:<name>` or `anonymous` (no valid token); `route` is the
-- route's pattern, `target` the id it acted on; `at` is when the request came (microseconds
-- since the epoch). The request id is the one the response's X-Request-Id and the log show.
CREATE TABLE audit_log (
    request_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    who TEXT NOT NULL,
    peer TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT,
    status INTEGER NOT NULL
);

CREATE INDEX audit_log_at ON audit_log (at);
