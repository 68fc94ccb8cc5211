#!/usr/bin/env bash
# Start the local PostgreSQL and Redis that the tests use, when they are not running.
set -u
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not available"; exit 1; }
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis is not available"; exit 1; }
# Headless Chromium and its driver for tests/test_oauth2_browser.py (Debian packages).
# A failed install does not fail this script: the browser test then fails and says why
# (or is skipped when GATEWAY_SKIP_BROWSER=1).
if [ "${GATEWAY_SKIP_BROWSER:-0}" != "1" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  echo "installing chromium and chromium-driver"
  if ! { apt-get update -qq >/tmp/gateway-chromium-apt.log 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         chromium chromium-driver >>/tmp/gateway-chromium-apt.log 2>&1; }; then
    echo "could not install chromium/chromium-driver (the browser test will fail):"
    tail -n 5 /tmp/gateway-chromium-apt.log
  fi
fi
# espeak-ng narrates story videos (docs/STORY.md; tests/test_story_video.py). A failed
# install does not fail this script: those tests then fail and say why.
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "installing espeak-ng"
  if ! { apt-get update -qq >/tmp/gateway-espeak-apt.log 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         espeak-ng >>/tmp/gateway-espeak-apt.log 2>&1; }; then
    echo "could not install espeak-ng (the story video tests will fail):"
    tail -n 5 /tmp/gateway-espeak-apt.log
  fi
fi
