#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/ui: a real JupyterLab driven by Playwright),
# as root, on Debian. Playwright's own browser download cannot work here (only package
# registries are reachable), so Playwright drives /usr/bin/chromium through executable_path.
#
# Idempotent: installs chromium only if it is missing.
set -euo pipefail

say() { echo "browser_setup: $*"; }

if [ -x /usr/bin/chromium ]; then
    say "$(/usr/bin/chromium --version 2>/dev/null | tail -n 1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    say "must run as root to install chromium (apt-get install chromium)" >&2
    exit 1
fi
say "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
say "$(/usr/bin/chromium --version 2>/dev/null | tail -n 1)"
