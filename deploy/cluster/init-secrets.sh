#!/bin/sh
# Development credentials for docker-compose.cluster.yml, made on the first `up` and kept
# after: the database password and URL, the MQTT passwords of forewarn and the simulator,
# EMQX's bootstrap users (its built-in password database) and Erlang cookie, and outreach's
# HMAC keys. Each file is mode 0600 and owned by the one user that reads it: forewarn's image
# runs as 10001, EMQX's as 1000; PostgreSQL's entrypoint reads its password as root.
# Needs only sh, od and chown (runs in the TimescaleDB image); SECRETS_DIR for a host run.
set -eu
dir="${SECRETS_DIR:-/secrets}"
mkdir -p "$dir"
cd "$dir"
umask 077
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -s emqx-users.csv ]; then
    secret > postgres-password
    printf 'postgres://postgres:%s@timescaledb:5432/forewarn' "$(cat postgres-password)" > database-url
    secret > forewarn-mqtt-password
    secret > simulator-mqtt-password
    secret > emqx-cookie
    # EMQX's `bootstrap_type = plain`: EMQX hashes each password (pbkdf2, emqx.conf) when it
    # loads the file into the built-in database, on the authenticator's creation; existing
    # users are not overwritten.
    {
        echo 'user_id,password,is_superuser'
        echo "forewarn,$(cat forewarn-mqtt-password),false"
        echo "simulator,$(cat simulator-mqtt-password),false"
    } > emqx-users.csv.tmp
    mv emqx-users.csv.tmp emqx-users.csv
    echo "development credentials written to $dir"
else
    echo "development credentials in $dir kept"
fi
[ -s signing-secret ] || secret > signing-secret
[ -s inbound-secret ] || secret > inbound-secret
chown 10001:10001 database-url forewarn-mqtt-password simulator-mqtt-password signing-secret inbound-secret
chown 1000:1000 emqx-users.csv emqx-cookie
chmod 0600 postgres-password database-url forewarn-mqtt-password simulator-mqtt-password \
    emqx-users.csv emqx-cookie signing-secret inbound-secret
