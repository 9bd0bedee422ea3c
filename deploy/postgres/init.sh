#!/usr/bin/env bash
# Creates one role and one database per service (auth, users, chat, notifications, files).
# Run by the postgres image's entrypoint from /docker-entrypoint-initdb.d, once,
# when the data volume is empty. Passwords come from the environment
# (AUTH_DB_PASSWORD, USERS_DB_PASSWORD, CHAT_DB_PASSWORD, NOTIFICATIONS_DB_PASSWORD,
# FILES_DB_PASSWORD; see deploy/.env.example).
set -euo pipefail

for svc in auth users chat notifications files; do
  var="${svc^^}_DB_PASSWORD"
  password="${!var:?$var must be set}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v svc="$svc" -v pw="$password" <<'SQL'
CREATE ROLE :"svc" LOGIN PASSWORD :'pw';
CREATE DATABASE :"svc" OWNER :"svc";
REVOKE ALL ON DATABASE :"svc" FROM PUBLIC;
SQL
done
