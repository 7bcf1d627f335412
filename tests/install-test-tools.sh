#!/usr/bin/env bash
# Installs the external clients the tests drive (swaks with its TLS
# modules, curl, openssl, msmtp, s-nail: a mail(1) that runs our sendmail, and
# python3 for the relay tests' smarthost) and the mail readers the fault
# tests run beside the server (Dovecot's doveadm, mutt, and liblockfile's
# dotlockfile), and systemd's socket activation tool for the socket
# activation test, and debootstrap and systemd-nspawn for the package
# test's throwaway Debian root (installed, then booted), and the milters
# the milter tests run (SpamAssassin's spamd with spamass-milter,
# OpenDKIM with its key tool, ClamAV's clamd with clamav-milter, and
# rspamd), from the Debian archive, but only those
# that are missing; then cargo-deb, which builds the package, from
# crates.io, and dkimpy, the DKIM verifier, from PyPI when the python3
# the tests run cannot import Debian's python3-dkim.
# Needs root (or sudo) only when something has to be installed. Called by
# .ci/run.
set -euo pipefail

# command=package
wanted=(swaks=swaks curl=curl openssl=openssl s-nail=s-nail python3=python3
    doveadm=dovecot-core mutt=mutt dotlockfile=liblockfile-bin
    systemd-socket-activate=systemd script=bsdutils debootstrap=debootstrap
    systemd-nspawn=systemd-container msmtp=msmtp spamd=spamd
    spamass-milter=spamass-milter opendkim=opendkim
    opendkim-genkey=opendkim-tools clamd=clamav-daemon
    clamav-milter=clamav-milter rspamd=rspamd)
missing=()
for pair in "${wanted[@]}"; do
    if ! command -v "${pair%%=*}" >/dev/null 2>&1; then
        missing+=("${pair#*=}")
    fi
done
# swaks --tls needs these Perl modules.
if ! perl -MIO::Socket::SSL -MNet::SSLeay -e1 >/dev/null 2>&1; then
    missing+=(libio-socket-ssl-perl libnet-ssleay-perl)
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "install-test-tools: installing cargo-deb"
    cargo install --locked cargo-deb@3.8.0
fi

# The DKIM verifier, for the python3 first on the PATH (which may not be
# Debian's).
if ! python3 -c 'import dkim' >/dev/null 2>&1; then
    if [ "$(command -v python3)" = /usr/bin/python3 ]; then
        missing+=(python3-dkim)
    else
        echo "install-test-tools: installing dkimpy for $(command -v python3)"
        python3 -m pip install --quiet dkimpy==1.1.8
    fi
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-tools: everything the tests run is already installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

echo "install-test-tools: installing ${missing[*]}"
# Dovecot's and systemd's packages would start daemons; the tests need
# only their tools.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    made_policy=1
fi
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
if [ -n "$made_policy" ]; then
    "${sudo[@]}" rm -f "$policy"
fi

for pair in "${wanted[@]}"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || {
        echo "install-test-tools: ${pair%%=*} still missing after apt-get install" >&2
        exit 1
    }
done
perl -MIO::Socket::SSL -MNet::SSLeay -e1 || {
    echo "install-test-tools: swaks's TLS modules still missing after apt-get install" >&2
    exit 1
}
