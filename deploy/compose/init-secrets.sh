#!/bin/sh
# Development credentials for docker-compose.yml, made on the first `up` and kept after:
# the database password and URL, and the MQTT passwords of forewarn and the simulator with
# Mosquitto's password file. Each file is mode 0600 and owned by the one user that reads
# it: forewarn's image runs as 10001, Mosquitto as 1883; PostgreSQL's entrypoint reads its
# password as root. Runs in the eclipse-mosquitto image (for mosquitto_passwd); CI runs it
# on the host with SECRETS_DIR set.
set -eu
dir="${SECRETS_DIR:-/secrets}"
mkdir -p "$dir"
cd "$dir"
umask 077
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -s mosquitto-passwd ]; then
    secret > postgres-password
    printf 'postgres://postgres:%s@timescaledb:5432/forewarn' "$(cat postgres-password)" > database-url
    secret > forewarn-mqtt-password
    secret > simulator-mqtt-password
    rm -f mosquitto-passwd.tmp
    mosquitto_passwd -c -b mosquitto-passwd.tmp forewarn "$(cat forewarn-mqtt-password)"
    mosquitto_passwd -b mosquitto-passwd.tmp simulator "$(cat simulator-mqtt-password)"
    mv mosquitto-passwd.tmp mosquitto-passwd
    echo "development credentials written to $dir"
else
    echo "development credentials in $dir kept"
fi
# Outreach: the HMAC keys of forewarn's webhooks to the customers' phones (the simulator)
# and of the customers' replies (made separately, so older secret volumes get them too).
[ -s signing-secret ] || secret > signing-secret
[ -s inbound-secret ] || secret > inbound-secret
chown 10001:10001 database-url forewarn-mqtt-password simulator-mqtt-password signing-secret inbound-secret
chown 1883:1883 mosquitto-passwd
chmod 0600 postgres-password database-url forewarn-mqtt-password simulator-mqtt-password mosquitto-passwd \
    signing-secret inbound-secret
