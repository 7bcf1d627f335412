#!/usr/bin/env bash
# Installs the external SMTP clients that tests/clients.rs drives (swaks,
# curl) from the Debian archive, but only those that are missing. Needs root
# (or sudo) only when something has to be installed. Called by .ci/run.
set -euo pipefail

missing=()
for tool in swaks curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        # The Debian package has the same name as the command.
        missing+=("$tool")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-tools: swaks and curl are already installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

echo "install-test-tools: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-test-tools: $tool still missing after apt-get install" >&2
        exit 1
    }
done
