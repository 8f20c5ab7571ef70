-- 001_init.sql - first schema of the dwfd store (server/dwf_store.c).
-- Applied in one transaction by dwf_store_open(); PRAGMA user_version is
-- set to this file's number afterwards. Times are unix seconds (REAL).
-- Never edit a released migration: add schema/NNN_name.sql instead.

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    base        TEXT NOT NULL,             -- base spec JSON
    grid        TEXT NOT NULL,             -- grid JSON
    created_at  REAL NOT NULL
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    priority        INTEGER NOT NULL DEFAULT 0,
    sweep_id        INTEGER REFERENCES sweeps(id) ON DELETE SET NULL,
    spec            TEXT NOT NULL,         -- canonical spec JSON
    method          TEXT NOT NULL,
    depth           INTEGER NOT NULL,
    lambda          REAL NOT NULL,
    target_cr       REAL,                  -- NULL for dwf
    seed            INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    epoch           INTEGER NOT NULL DEFAULT 0, -- progress: epoch in progress (1-based)
    epochs          INTEGER NOT NULL DEFAULT 0,
    batch           INTEGER NOT NULL DEFAULT 0, -- batches done in that epoch
    batches         INTEGER NOT NULL DEFAULT 0,
    eta_seconds     REAL,
    progress_at     REAL,
    error           TEXT,
    metrics         TEXT,                  -- last epoch metrics JSON
    cr              REAL,                  -- from the last metrics
    test_acc        REAL,
    sparse_test_acc REAL
);
CREATE INDEX jobs_queue ON jobs(state, priority DESC, id);
CREATE INDEX jobs_sweep ON jobs(sweep_id, id);

CREATE TABLE metrics (
    job_id          INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    epoch           INTEGER NOT NULL,
    json            TEXT NOT NULL,         -- the epoch metrics object
    step            INTEGER,
    lr              REAL,
    train_loss      REAL,
    train_acc       REAL,
    test_loss       REAL,
    test_acc        REAL,
    sparse_test_acc REAL,
    val_acc         REAL,
    nonzero         INTEGER,
    weights         INTEGER,
    cr              REAL,
    created_at      REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    epoch       INTEGER NOT NULL,
    step        INTEGER NOT NULL,
    blob        BLOB NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE models (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    blob        BLOB NOT NULL,             -- the .dwfm bytes
    nonzero     INTEGER NOT NULL,
    weights     INTEGER NOT NULL,
    cr          REAL NOT NULL,
    etag        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE thresholds (
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    threshold   REAL,
    cr          REAL,
    val_acc     REAL,
    test_acc    REAL,
    json        TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
