#!/usr/bin/with-contenv bashio
# shellcheck shell=bash
# Starts otp2mqtt with the add-on's options as its config and the broker from
# the Supervisor's MQTT service (the Mosquitto add-on).
#
# The add-on's options are otp2mqtt config keys (sensors, instance_id) plus one
# key of the add-on's own, log_level. otp2mqtt refuses unknown keys, so jq drops
# log_level (and any unset optional value) into /tmp/otp2mqtt.json; nothing else
# is rewritten. Broker settings go in through OTP2MQTT__MQTT__* variables, the
# password through a file, so it never sits in the process environment.
set -euo pipefail

readonly OPTIONS=/data/options.json
readonly CONFIG=/tmp/otp2mqtt.json
readonly PASSWORD_FILE=/tmp/otp2mqtt-mqtt-password

umask 077

if ! bashio::services.available "mqtt"; then
    bashio::exit.nok "No MQTT broker found: install and start the Mosquitto broker add-on (or set up the MQTT integration's broker), then restart this add-on."
fi

# Home Assistant's log levels, in otp2mqtt's words.
case "$(bashio::config 'log_level' 'info')" in
    trace) export OTP2MQTT_LOG=trace ;;
    debug) export OTP2MQTT_LOG=debug ;;
    warning) export OTP2MQTT_LOG=warn ;;
    error | fatal) export OTP2MQTT_LOG=error ;;
    *) export OTP2MQTT_LOG=info ;;
esac

jq 'del(.log_level) | walk(if type == "object" then with_entries(select(.value != null)) else . end)' \
    "${OPTIONS}" > "${CONFIG}"

OTP2MQTT__MQTT__HOST="$(bashio::services mqtt 'host')"
OTP2MQTT__MQTT__PORT="$(bashio::services mqtt 'port')"
export OTP2MQTT__MQTT__HOST OTP2MQTT__MQTT__PORT
username="$(bashio::services mqtt 'username')"
if bashio::var.has_value "${username}"; then
    export OTP2MQTT__MQTT__USERNAME="${username}"
    bashio::services mqtt 'password' > "${PASSWORD_FILE}"
    export OTP2MQTT__MQTT__PASSWORD_FILE="${PASSWORD_FILE}"
fi
if bashio::var.true "$(bashio::services mqtt 'ssl')"; then
    # Verified against the system roots and the broker host name.
    export OTP2MQTT__MQTT__TLS__ENABLED=true
fi

bashio::log.info "Starting otp2mqtt, broker ${OTP2MQTT__MQTT__HOST}:${OTP2MQTT__MQTT__PORT}"
exec /usr/local/bin/otp2mqtt run --config "${CONFIG}"
