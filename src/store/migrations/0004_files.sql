-- Files kept by reference (issue 12): one row per kept file, owned by the key that kept it,
-- gone at `expires_at` (microseconds since the epoch). The bytes are a blob in
-- DATA/files/sha256/, named by their SHA-256 and shared by every row with the same content.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    name TEXT NOT NULL,
    execution_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX files_owner ON files (owner, created_at);

CREATE INDEX files_sha256 ON files (sha256);

CREATE INDEX files_expiry ON files (expires_at);

-- The blobs an execution reads by reference, written with the execution itself: a blob an
-- execution that has not ended uses is kept, even when its file is deleted or expires.
CREATE TABLE execution_blobs (
    execution_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (execution_id, sha256)
);

CREATE INDEX execution_blobs_sha256 ON execution_blobs (sha256);
