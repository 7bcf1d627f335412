#!/usr/bin/env bash
# Installs the external clients the tests drive (swaks with its TLS
# modules, curl, openssl, s-nail: a mail(1) that runs our sendmail, and
# python3 for the relay tests' smarthost) from the Debian archive, but only
# those that are missing. Needs root (or sudo) only when something has to
# be installed. Called by .ci/run.
set -euo pipefail

missing=()
for tool in swaks curl openssl s-nail python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        # The Debian package has the same name as the command.
        missing+=("$tool")
    fi
done
# swaks --tls needs these Perl modules.
if ! perl -MIO::Socket::SSL -MNet::SSLeay -e1 >/dev/null 2>&1; then
    missing+=(libio-socket-ssl-perl libnet-ssleay-perl)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-tools: swaks (with TLS), curl, openssl, s-nail and python3 are already installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

echo "install-test-tools: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for tool in swaks curl openssl s-nail python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-test-tools: $tool still missing after apt-get install" >&2
        exit 1
    }
done
perl -MIO::Socket::SSL -MNet::SSLeay -e1 || {
    echo "install-test-tools: swaks's TLS modules still missing after apt-get install" >&2
    exit 1
}
