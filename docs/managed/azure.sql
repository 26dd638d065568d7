-- OptiSchema on Azure Database for PostgreSQL flexible server: least-privilege roles and extensions.
-- Run as the master user (a member of azure_pg_admin), connected to the database the target names:
--   psql "host=$SERVER.postgres.database.azure.com dbname=app user=$ADMIN sslmode=verify-full sslrootcert=azure-roots.pem" \
--        -v analysis_password="$A" -v write_password="$W" -v table_owner=app_owner -f docs/managed/azure.sql
-- Settings are never changed by the operator here (Azure refuses ALTER SYSTEM): it shows the server-parameter change.
\set ON_ERROR_STOP on

-- Extensions: allow-list them first (server parameter azure.extensions, e.g. az postgres flexible-server parameter
-- set
-- --name azure.extensions --value pg_stat_statements,hypopg,pgstattuple); HypoPG is installed only when offered.
-- Without HypoPG the operator prices candidates on a sandbox copy.
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
