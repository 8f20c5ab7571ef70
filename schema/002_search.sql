-- 002_search.sql - target-CR search sweeps and threshold curves during
-- training (issue 6). Applied by dwf_store_open() on databases at
-- user_version 1.

-- A search sweep (kind 'search') creates its children one at a time:
-- `search` holds its options (target_cr, tolerance, budget, lambda_min,
-- lambda_max, lambda0) as JSON; NULL for grid sweeps.
ALTER TABLE sweeps ADD COLUMN search TEXT;
-- searching, reached, budget, unreachable, canceled or failed
ALTER TABLE sweeps ADD COLUMN search_state TEXT;
ALTER TABLE sweeps ADD COLUMN search_best INTEGER REFERENCES jobs(id) ON DELETE SET NULL;
ALTER TABLE sweeps ADD COLUMN search_message TEXT;

-- Threshold curves taken every k epochs (thresholds.every); the end-of-run
-- curve stays in `thresholds`. json: the array of curve points.
CREATE TABLE epoch_thresholds (
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    epoch       INTEGER NOT NULL,
    json        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;
