-- Completion callbacks: the outbox. A row is written before its subject (state 'waiting');
-- when the subject ends, the body is sealed (`body`: the bytes on the wire, base64;
-- `secret_key` erased) and it is 'pending' until `next_attempt_at`; a worker claims it per
-- attempt ('delivering' on `node` until `next_attempt_at`, the lease); it ends 'delivered'
-- or 'failed' (body erased). Subjects are `subject_kind` + `subject_id` (executions; later
-- submissions).
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    url TEXT NOT NULL,
    mode TEXT NOT NULL,
    secret_key TEXT,
    state TEXT NOT NULL,
    body TEXT,
    signature TEXT,
    attempts BIGINT NOT NULL,
    node TEXT,
    claimed_at BIGINT,
    created_at BIGINT NOT NULL,
    sealed_at BIGINT,
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    last_error TEXT
);

CREATE INDEX callbacks_due ON callbacks (state, next_attempt_at);

CREATE INDEX callbacks_subject ON callbacks (subject_kind, subject_id);

-- Every attempt: when, how long, the receiver's status (when it answered), why it failed,
-- and when the next one is due.
CREATE TABLE callback_attempts (
    callback_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    next_attempt_at BIGINT,
    PRIMARY KEY (callback_id, attempt)
);
