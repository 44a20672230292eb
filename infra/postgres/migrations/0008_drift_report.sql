-- Filled by the drift component's topic (health.drift_report.v1): one row
-- per model version and event-time window, the history of the verdicts.
-- The envelope id comes from the model and the window, so a window
-- evaluated again replaces its row.
CREATE TABLE drift_report (
    event_id       uuid        PRIMARY KEY,
    model_name     text        NOT NULL,
    model_version  text        NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL CHECK (window_end > window_start),
    cases          bigint      NOT NULL CHECK (cases >= 0),
    scores         bigint      NOT NULL CHECK (scores >= 0),
    status         text        NOT NULL CHECK (status IN ('insufficient', 'ok', 'warn', 'alert')),
    -- {"psi_warn", "psi_alert", "min_cases"}
    thresholds     jsonb       NOT NULL,
    -- [{"feature", "kind", "n", "psi", "jensen_shannon", "ks_statistic",
    --   "ks_p_value", "status"}, ...], the score last
    features       jsonb       NOT NULL,
    source         text        NOT NULL,
    ingested_at    timestamptz NOT NULL
);
CREATE INDEX drift_report_window ON drift_report (model_name, window_end);
