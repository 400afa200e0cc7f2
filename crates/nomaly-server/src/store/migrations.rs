//! The store's schema, as migrations applied in order (`PRAGMA user_version` counts them).

/// Schema versions in order; `user_version` counts how many have been applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs, chunks, events, registered pipelines.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline TEXT NOT NULL,
        file TEXT NOT NULL,
        text TEXT NOT NULL,
        overrides TEXT NOT NULL,
        priority INTEGER NOT NULL,
        memory_bytes INTEGER NOT NULL,
        timeout_ms INTEGER,
        cpus INTEGER,
        state TEXT NOT NULL,
        mode TEXT NOT NULL,
        trigger TEXT NOT NULL,
        submitted_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        progress TEXT,
        report TEXT,
        error TEXT
    );
    CREATE INDEX runs_by_state ON runs(state);
    CREATE INDEX runs_by_pipeline ON runs(pipeline, id);
    CREATE TABLE chunks (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        chunk INTEGER NOT NULL,
        state TEXT NOT NULL,
        rows INTEGER NOT NULL,
        anomalies INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (run_id, chunk)
    );
    CREATE TABLE events (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE pipelines (
        name TEXT PRIMARY KEY,
        file TEXT NOT NULL,
        text TEXT NOT NULL,
        cron TEXT,
        timezone TEXT,
        catch_up TEXT NOT NULL,
        allow_overlap INTEGER NOT NULL,
        after TEXT NOT NULL,
        on_failure TEXT NOT NULL,
        priority INTEGER NOT NULL,
        added_ms INTEGER NOT NULL,
        last_fire_ms INTEGER,
        fires INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0
    );",
    // 2: the interval and parameters a run is for, backfills, and retries that wait.
    "CREATE TABLE backfills (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline TEXT NOT NULL,
        from_day TEXT NOT NULL,
        to_day TEXT NOT NULL,
        max_active INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    ALTER TABLE runs ADD COLUMN context TEXT;
    ALTER TABLE runs ADD COLUMN backfill INTEGER REFERENCES backfills(id);
    ALTER TABLE runs ADD COLUMN not_before_ms INTEGER;
    CREATE INDEX runs_by_backfill ON runs(backfill, id);",
];
