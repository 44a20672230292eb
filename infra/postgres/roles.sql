-- Vigie's PostgreSQL roles, least privilege per component. An administrator
-- runs it in Vigie's database after the migrations, and again after an
-- upgrade's (it is idempotent):
--
--   psql -v ON_ERROR_STOP=1 -d vigie -f infra/postgres/roles.sql
--
-- then gives each component's login its role, e.g.
--
--   CREATE ROLE "vigie-sink" LOGIN PASSWORD '…' IN ROLE vigie_sink;
--   CREATE ROLE "vigie-api" LOGIN PASSWORD '…' IN ROLE vigie_reader;
--
-- The migrations are the administrator's (or an owner role's): the sinks
-- then run with `migrate = false`.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigie_sink') THEN
    CREATE ROLE vigie_sink NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigie_reader') THEN
    CREATE ROLE vigie_reader NOLOGIN;
  END IF;
  -- Only the roles granted here connect to this database; the sink stages
  -- its rows in temporary tables.
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO vigie_sink', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO vigie_reader', current_database());
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO vigie_sink, vigie_reader;

-- The PostgreSQL sink (`vigie consume --sink postgres`): upserts of the
-- health tables and their reference rows, its offsets in the same
-- transaction, and its outbox of dead letters, emptied once published.
-- No DDL, no TRUNCATE, no DELETE of data.
GRANT SELECT, INSERT, UPDATE ON
  health_case, country_day, outbreak_news, outbreak_news_version, case_score,
  drift_report, dim_state, dim_county, dim_country, sink_offsets
  TO vigie_sink;
GRANT SELECT, INSERT, DELETE ON dlq_outbox TO vigie_sink;

-- Readers (the API, dashboards, reports): the data, read-only; not the
-- sinks' bookkeeping (offsets, outbox).
GRANT SELECT ON
  health_case, country_day, outbreak_news, outbreak_news_version, case_score,
  drift_report, dim_state, dim_county, dim_country
  TO vigie_reader;
