-- API keys: only the SHA-256 of a token is kept. Times are microseconds since the epoch.
CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    max_memory BIGINT,
    max_time DOUBLE PRECISION,
    max_executions BIGINT,
    created_at BIGINT NOT NULL
);

-- Executions, and the work queue (status 'queued', oldest queued_at first). `request` and
-- `result` are the engine's typed values as JSON text; the files live on disk.
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    environment TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    end_reason TEXT,
    message TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    queued_at BIGINT,
    node TEXT
);

CREATE INDEX executions_queue ON executions (status, queued_at);

CREATE INDEX executions_owner ON executions (owner, created_at);
