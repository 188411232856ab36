#!/bin/sh
# Runs once, on an empty data directory (docker-entrypoint-initdb.d): creates the service role
# with the password from the pg_app_password secret. The first migration then finds the role
# (it only creates it when missing) and grants it SELECT/INSERT on the log.
set -eu
pw=$(cat /run/secrets/pg_app_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v pw="$pw" <<'SQL'
CREATE ROLE tvote_app LOGIN PASSWORD :'pw';
SQL
