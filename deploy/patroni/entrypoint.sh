#!/bin/sh
# A Patroni member: its passwords from the compose secrets into the environment Patroni reads them from
# (never in its configuration file, which is generated and committed: deploy/patroni/pgN.yml), then Patroni.
set -eu
PATRONI_SUPERUSER_PASSWORD=$(cat /run/secrets/pg_owner_password)
PATRONI_REWIND_PASSWORD=$PATRONI_SUPERUSER_PASSWORD   # pg_rewind runs as the superuser (rewind: postgres)
PATRONI_REPLICATION_PASSWORD=$(cat /run/secrets/pg_replication_password)
export PATRONI_SUPERUSER_PASSWORD PATRONI_REWIND_PASSWORD PATRONI_REPLICATION_PASSWORD
exec patroni /etc/patroni/patroni.yml
