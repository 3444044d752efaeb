#!/usr/bin/env bash
# Find, or install, the browser that the browser test drives (Debian's chromium).
#   exit 0: chromium is there (or was just installed);
#   exit 3: it is missing and cannot be installed here (not root, or no apt-get).
# The Makefile then skips the browser test loudly, except under CI (CI=true),
# where a missing browser is a failure, never a silent skip.
set -uo pipefail
have() { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || [ -n "${NEURALSPEC_CHROMIUM:-}" ]; }
if have; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing: installing Debian's chromium for the browser test (apt-get, as root)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    if have; then exit 0; fi
    echo "apt-get could not install chromium." >&2
fi
exit 3
