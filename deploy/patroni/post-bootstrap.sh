#!/bin/sh
# Patroni runs this once, on the member that initialised the cluster, with its server up and before it
# replicates (bootstrap.post_bootstrap; $1 is the superuser's connection URL, PGPASSFILE is set). It does
# what the single `postgres` service gets from POSTGRES_DB and deploy/postgres/init-app-role.sh: the
# `tvote` database and the service role `tvote_app` with the pg_app_password secret (the first migration
# then finds the role and grants it SELECT/INSERT on the log). Then the pgBackRest stanza the members'
# archive_command pushes WAL into (tvote.patroni_deploy.STANZA: the same options). A failure fails the
# bootstrap: Patroni logs it and no member becomes healthy (a repository left from another cluster is refused).
set -eu
pw=$(cat /run/secrets/pg_app_password)
psql -v ON_ERROR_STOP=1 "$1" -v pw="$pw" <<'SQL'
CREATE ROLE tvote_app LOGIN PASSWORD :'pw';
CREATE DATABASE tvote;
SQL
pgbackrest --stanza=tvote --repo1-path=/var/lib/pgbackrest --log-level-file=off --log-level-console=off \
  --log-level-stderr=error --pg1-path=/var/lib/postgresql/data/pgdata stanza-create
