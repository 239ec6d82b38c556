-- A key has an id that is never reused (`key_<32 hex>`): executions belong to that id, so a
-- new key of a deleted key's name inherits nothing. Keys may also cap pids and output, and
-- carry storage quotas (pending executions, files per execution, bytes stored). Submissions,
-- projects and kept files, like executions, belong to key ids from here on.
CREATE TABLE api_keys_v2 (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    max_memory BIGINT,
    max_time DOUBLE PRECISION,
    max_executions BIGINT,
    max_pids BIGINT,
    max_output_bytes BIGINT,
    max_pending BIGINT,
    max_files BIGINT,
    max_storage_bytes BIGINT,
    manage_projects BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Keys of before get an id of their own ('legacy_…' never equals a new 'key_…' id).
INSERT INTO api_keys_v2 (id, name, token_hash, max_memory, max_time, max_executions,
                         manage_projects, created_at)
SELECT 'legacy_' || name || '_' || created_at, name, token_hash, max_memory, max_time,
       max_executions, manage_projects, created_at
FROM api_keys;

-- An execution belongs to the key of its name that existed when it was created; one made by
-- an earlier key of that name (since deleted) belongs to no key: start-up erases it.
UPDATE executions SET owner = COALESCE(
    (SELECT 'key:' || k.id FROM api_keys_v2 k
     WHERE 'key:' || k.name = executions.owner AND k.created_at <= executions.created_at),
    'deleted-key')
WHERE owner LIKE 'key:%';

-- Submissions alike (start-up erases those of no key, with their callbacks).
UPDATE submissions SET owner = COALESCE(
    (SELECT 'key:' || k.id FROM api_keys_v2 k
     WHERE 'key:' || k.name = submissions.owner AND k.created_at <= submissions.created_at),
    'deleted-key')
WHERE owner LIKE 'key:%';

-- A project records who made it (projects are shared: one of no key stays).
UPDATE projects SET owner = COALESCE(
    (SELECT 'key:' || k.id FROM api_keys_v2 k
     WHERE 'key:' || k.name = projects.owner AND k.created_at <= projects.created_at),
    'deleted-key')
WHERE owner LIKE 'key:%';

-- Kept files alike (start-up erases those of no key, with their unneeded blobs).
UPDATE files SET owner = COALESCE(
    (SELECT 'key:' || k.id FROM api_keys_v2 k
     WHERE 'key:' || k.name = files.owner AND k.created_at <= files.created_at),
    'deleted-key')
WHERE owner LIKE 'key:%';

DROP TABLE api_keys;

ALTER TABLE api_keys_v2 RENAME TO api_keys;

-- Bytes an execution keeps on disk (inputs, streams, log, outputs): a key's storage quota.
ALTER TABLE executions ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
