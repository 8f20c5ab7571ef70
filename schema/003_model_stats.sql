-- 003_model_stats.sql - a covering index of the models' small columns.
-- A model's row stores its BLOB (hundreds of kB, on overflow pages)
-- before nonzero, weights and cr, so reading those from the row walks the
-- whole blob: 20 jobs of GET /v1/jobs read ~8 MB. Job queries read them
-- from this index instead (INDEXED BY models_stats) and the blob's size
-- with length(), which reads only the row's header.
CREATE INDEX models_stats ON models(job_id, weights, nonzero, cr);
