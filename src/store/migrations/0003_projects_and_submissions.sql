-- Grading. An API key may be allowed to manage projects.
ALTER TABLE api_keys ADD COLUMN manage_projects BIGINT NOT NULL DEFAULT 0;

-- Projects: the checked definition as JSON; the files live on disk under
-- DATA/projects/<id>/<revision>/ (a new revision on each replacement).
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    revision BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Submissions, and their queue (status 0, oldest queued_at first). `status` is Sphere's
-- code; `grade` the final grade as JSON; `attempts` counts restarts of the server that
-- interrupted it.
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    project_id TEXT NOT NULL,
    project_revision BIGINT NOT NULL,
    scenario TEXT NOT NULL,
    status BIGINT NOT NULL,
    stage TEXT,
    attempts BIGINT NOT NULL,
    grade TEXT,
    created_at BIGINT NOT NULL,
    queued_at BIGINT,
    started_at BIGINT,
    ended_at BIGINT,
    node TEXT
);

CREATE INDEX submissions_queue ON submissions (status, queued_at);

CREATE INDEX submissions_owner ON submissions (owner, created_at);

CREATE INDEX submissions_project ON submissions (project_id, status);

-- What a submission finished so far: each stage and each test, kept as they end so that a
-- restarted server resumes from there.
CREATE TABLE submission_stages (
    submission_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (submission_id, stage)
);

CREATE TABLE submission_tests (
    submission_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (submission_id, position)
);
