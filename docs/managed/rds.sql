-- OptiSchema on Amazon RDS for PostgreSQL or Aurora PostgreSQL: least-privilege roles and extensions.
-- Run as the master user (a member of rds_superuser), connected to the database the target names:
--   psql "host=$ENDPOINT dbname=app user=postgres sslmode=verify-full sslrootcert=global-bundle.pem" \
--        -v analysis_password="$A" -v write_password="$W" -v table_owner=app_owner -f docs/managed/rds.sql
-- Settings are never changed by the operator here (RDS refuses ALTER SYSTEM): it shows the parameter-group change.
\set ON_ERROR_STOP on

-- Extensions. pg_stat_statements is in RDS's default shared_preload_libraries; HypoPG is offered on RDS since
-- 13.11, 14.8 and 15.3 and on Aurora since 15.5. Without HypoPG the operator prices candidates on a sandbox copy.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SELECT count(*) > 0 AS hypopg_available FROM pg_available_extensions WHERE name = 'hypopg' \gset
\if :hypopg_available
CREATE EXTENSION IF NOT EXISTS hypopg;
\endif

-- The analysis role: reads statistics and catalogs, never writes.
CREATE ROLE optischema_analysis LOGIN PASSWORD :'analysis_password';
GRANT pg_read_all_stats TO optischema_analysis;  -- every user's statements in pg_stat_statements
GRANT pg_monitor TO optischema_analysis;         -- pg_control_system(): the system identifier changes are checked against
ALTER ROLE optischema_analysis SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"DBNAME" TO optischema_analysis;

-- The write role (spec.connection.writeCredentialsSecret): CREATE/DROP INDEX CONCURRENTLY and ANALYZE need the
-- tables' owner, so it is a member of the role that owns them. Nothing else.
CREATE ROLE optischema_write LOGIN PASSWORD :'write_password';
GRANT :"table_owner" TO optischema_write;
GRANT CONNECT ON DATABASE :"DBNAME" TO optischema_write;
