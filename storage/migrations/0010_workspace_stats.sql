-- 0010: the workspace-stats table of the stream, kept in PostgreSQL as usage_records keeps the
-- usage counters. The usage agent writes each workspace's statistics document here after its
-- changelog has taken it, so that a worker whose changelogs are gone (a restarted embedded
-- broker keeps nothing) seeds its table from here instead of starting from zero
-- (streams/seed.py). `folded` counts the usage events folded into the document: a write
-- never replaces a document that has folded more.

CREATE TABLE workspace_stats (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL UNIQUE REFERENCES workspaces (id) ON DELETE CASCADE,
    stats jsonb NOT NULL,
    folded bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER workspace_stats_updated_at BEFORE UPDATE ON workspace_stats
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
