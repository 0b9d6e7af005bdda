# Sourced by .ci/run: the services the suites use besides PostgreSQL.
#
# Mosquitto (the MQTT broker of tests/e2e/test_mqtt_ingest.py): the tests start private brokers
# from the `mosquitto` binary on free ports, so the binary must be there; a broker at
# 127.0.0.1:1883 is started too when nothing listens there (the port the issue names).
# Installed with apt-get where it is missing; when that cannot be done the MQTT tests skip,
# saying why.

_meterline_mosquitto() {
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      echo "services: installing mosquitto"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1; } \
        || echo "services: could not install mosquitto: the MQTT tests will skip" >&2
    else
      echo "services: no mosquitto and no apt-get as root: the MQTT tests will skip" >&2
    fi
  fi
  local bin
  bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
  if [ -x "$bin" ] && ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    echo "services: starting mosquitto on 127.0.0.1:1883"
    "$bin" -d -p 1883 >/dev/null 2>&1 || echo "services: mosquitto did not start" >&2
  fi
  export METERLINE_MOSQUITTO="$bin"
}
_meterline_mosquitto
unset -f _meterline_mosquitto
