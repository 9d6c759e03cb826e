#!/usr/bin/env bash
# Installs what the real-Swarm tests (tests/swarm) and the demo need, only if missing:
#   docker.io        dockerd (the engine; Debian bookworm ships 20.10, API 1.41)
#   docker-registry  the distribution registry (`docker-registry serve CONFIG`)
#   busybox-static   /bin/busybox, the only binary inside the test images
#   iproute2         `ip` (usually there already)
#   postgresql       initdb, pg_ctl, postgres: the tests' private PostgreSQL clusters (tests/pg.py)
#   chromium         the browser the dashboard's tests drive headless (tests/ui, Playwright)
#   age              the age command line: the secrets tests check that it opens what
#                    `sami secret set` encrypts (tests/secrets)
# Idempotent: a machine that has them already is left alone (no apt-get update either).
# Must run as root (CI and the project's sessions do). See sami_dev/devswarm.py.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
# `ip` brings up loopback in the dev engine's own network namespace (sami_dev/devswarm.py).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The images need a *static* busybox (the `busybox` package is dynamically linked).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" \
    || need+=(busybox-static)
# Debian puts the server's binaries in /usr/lib/postgresql/N/bin, off the PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)

# The dashboard's browser tests use the distribution's chromium (never `playwright install`).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v age >/dev/null 2>&1 || need+=(age)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-engine: dockerd, docker-registry, busybox, postgresql, chromium and age are present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-engine: missing ${need[*]}; run this script as root to install them" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-engine: apt-get update"
apt-get update -q
echo "install-engine: installing ${need[*]}"
apt-get install -y -q --no-install-recommends "${need[@]}"

for tool in dockerd docker-registry; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-engine: $tool still missing" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "install-engine: /bin/busybox still missing" >&2; exit 1; }
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || { echo "install-engine: postgresql's initdb still missing" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "install-engine: /usr/bin/chromium still missing" >&2; exit 1; }
command -v age >/dev/null 2>&1 || { echo "install-engine: age still missing" >&2; exit 1; }
echo "install-engine: done ($(dockerd --version))"
