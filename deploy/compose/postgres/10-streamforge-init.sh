#!/usr/bin/env bash
# Run by the official postgres image from /docker-entrypoint-initdb.d, once, on an empty data
# volume (as the postgres user, the temporary server on its local socket).
#
# It only hands over to deploy/postgres/init-primary.sh (the script the lab runs on pg-1),
# mounted at /opt/streamforge/postgres. That script is not mounted into initdb.d itself because
# it applies schema.sql from its own directory, and the image would also run any *.sql file
# found there against POSTGRES_DB (the wrong database, as the wrong role).
#
# Invoked through bash rather than exec'd: the image sources (not executes) an initdb.d script
# whose executable bit was lost in a checkout, and an exec would then replace its entrypoint.
bash /opt/streamforge/postgres/init-primary.sh
