#!/usr/bin/env bash
# What the tests need outside the virtualenv, set up if missing (part of `make test`): the real
# PostgreSQL on 127.0.0.1:5432 (its tests must run, never skip), Debian's chromium for the
# dashboard's browser tests (Playwright drives it; no browser download), and libfaketime for
# the test that steps the matcher's wall clock.
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 1
  done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
  echo "chromium is missing; installing Debian's package"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    || { echo "could not install chromium (the dashboard tests need /usr/bin/chromium)"; exit 1; }
fi
[ -x /usr/bin/chromium ] || { echo "/usr/bin/chromium is still missing"; exit 1; }

if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  echo "libfaketime is missing; installing Debian's package (a test steps a process's clock)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime \
    || { echo "could not install faketime"; exit 1; }
fi
