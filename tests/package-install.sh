#!/usr/bin/env bash
# The Debian package, installed for real: builds it with cargo-deb, makes a
# throwaway Debian root (debootstrap --variant=minbase), and inside it, in
# a mount namespace of its own:
#   - apt-get installs the package beside bsd-mailx (which needs a
#     mail-transport-agent: ours must provide it);
#   - checks the files, links, conffile, account, spool, /etc/aliases and
#     enabled units, and the shipped configuration;
#   - starts mailroom on a loopback port with the shipped configuration,
#     and delivers to a system user through SMTP (Python's smtplib),
#     through /usr/sbin/sendmail as another user, and through mail(1),
#     reading the mbox with Python's mailbox and with mail(1) itself;
#   - newaliases: an alias added to /etc/aliases works once it has run;
#   - upgrades to a newer revision with a message waiting in the maildrop
#     and a changed conffile: both kept, the message delivered after;
#   - purges: spool, queue, configuration and account gone, /etc/aliases
#     kept.
# Run by tests/package.rs (as root; it needs debootstrap and cargo-deb,
# which tests/install-test-tools.sh installs), or by hand:
#   sudo tests/package-install.sh
# MIRROR overrides the Debian mirror. A minbase root is cached in
# target/package-test/ so that later runs need not download it again.
# Prints "figure:" lines with the package's sizes.
set -euo pipefail

if [ "${1:-}" != "--inside" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "package-install: needs root" >&2; exit 77; }
    cd "$(dirname "$0")/.."
    exec unshare --mount --propagation private "$0" --inside
fi

cd "$(dirname "$0")/.."
project=$PWD
mirror=${MIRROR:-http://deb.debian.org/debian}
cache=$project/target/package-test
mkdir -p "$cache"
work=$(mktemp -d /tmp/mailroom-package.XXXXXX)
root=$work/root
pid=
log=$work/mailroom.log

cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    # The mounts are in this namespace alone; they go with it, but the
    # tree cannot be removed while they are there.
    umount -R "$root/proc" "$root/dev" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "package-install: FAILED: $*" >&2
    if [ -s "$log" ]; then
        echo "--- the server's log:" >&2
        cat "$log" >&2
    fi
    exit 1
}
step() { echo "package-install: $*"; }
in_root() { chroot "$root" "$@"; }
as_user() {
    local user=$1
    shift
    chroot --userspec="$user:$user" "$root" env -i HOME="/home/$user" USER="$user" \
        LOGNAME="$user" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"
}

step "building the package"
cargo deb --output "$work/" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "cargo deb"; }
deb=$(ls "$work"/mailroom_*.deb)
cargo deb --no-build --deb-revision 2 --output "$work/" >>"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; fail "cargo deb --deb-revision 2"; }
deb2=$(ls "$work"/mailroom_*-2_*.deb)

step "making a Debian root"
tarball=$cache/bookworm-minbase.tgz
if [ ! -s "$tarball" ]; then
    debootstrap --variant=minbase --make-tarball="$tarball.part" bookworm "$work/dl" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap --make-tarball"; }
    mv "$tarball.part" "$tarball"
    rm -rf "$work/dl"
fi
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No daemon starts inside (there is no init): policy-rc.d says so.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp "$deb" "$deb2" "$root/tmp/"

step "apt-get install ./$(basename "$deb") bsd-mailx"
in_root env DEBIAN_FRONTEND=noninteractive apt-get -q update >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "apt-get update"; }
in_root env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
    "/tmp/$(basename "$deb")" bsd-mailx >>"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get install"; }
in_root dpkg-query -W -f='${Status}\n' mailroom | grep -qx "install ok installed" || fail "not installed"
in_root dpkg-query -W -f='${Status}\n' bsd-mailx | grep -qx "install ok installed" ||
    fail "bsd-mailx did not take mailroom as its mail-transport-agent"

step "checking what it installed"
for link in usr/sbin/sendmail usr/lib/sendmail usr/bin/mailq usr/bin/newaliases; do
    [ "$(readlink -f "$root/$link")" = "$root/usr/sbin/mailroom" ] || fail "/$link is not a link to mailroom"
done
in_root dpkg-query -W -f='${Conffiles}\n' mailroom | grep -q "/etc/mailroom/mailroom.toml" ||
    fail "/etc/mailroom/mailroom.toml is not a conffile"
in_root getent passwd mailroom >/dev/null || fail "no mailroom account"
[ "$(stat -c %a "$root/var/spool/mailroom")" = 755 ] || fail "/var/spool/mailroom is not 0755"
grep -q "^postmaster: root" "$root/etc/aliases" || fail "/etc/aliases has no postmaster"
for unit in mailroom.service mailroom.socket mailroom-submission.socket mailroom-smtps.socket; do
    [ -e "$root/lib/systemd/system/$unit" ] || [ -e "$root/usr/lib/systemd/system/$unit" ] ||
        fail "no $unit"
done
[ -L "$root/etc/systemd/system/multi-user.target.wants/mailroom.service" ] || fail "mailroom.service not enabled"
[ -L "$root/etc/systemd/system/sockets.target.wants/mailroom.socket" ] || fail "mailroom.socket not enabled"
[ ! -e "$root/etc/systemd/system/sockets.target.wants/mailroom-smtps.socket" ] ||
    fail "mailroom-smtps.socket enabled without TLS"
in_root man -w mailroom >/dev/null 2>&1 || [ -e "$root/usr/share/man/man8/mailroom.8" ] ||
    [ -e "$root/usr/share/man/man8/mailroom.8.gz" ] || fail "no mailroom(8)"
out=$(in_root mailroom --check-config /etc/mailroom/mailroom.toml 2>&1) || fail "the shipped configuration: $out"
[ -z "$out" ] || fail "the shipped configuration has findings: $out"
in_root mailroom --version | grep -q "^mailroom " || fail "mailroom --version"

step "two users, and mailroom on a loopback port"
in_root useradd -m -s /bin/sh alice
in_root useradd -m -s /bin/sh bob
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The shipped file, edited as its admin would: a loopback port and a name
# of our own (sendmail reads it too). The upgrade must keep these edits.
sed -i -e "s|^listen = .*|listen = [\"127.0.0.1:$port\"]|" \
    -e 's|^# hostname = .*|hostname = "box.test"|' \
    -e 's|^# local_domains = .*|local_domains = ["box.test", "localhost"]|' \
    "$root/etc/mailroom/mailroom.toml"
grep -q "127.0.0.1:$port" "$root/etc/mailroom/mailroom.toml" || fail "editing the configuration"
start() {
    chroot "$root" /usr/sbin/mailroom --config /etc/mailroom/mailroom.toml 2>>"$log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q "ready:" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || fail "mailroom exited"
        sleep 0.1
    done
    fail "mailroom not ready within 10 s"
}
stop() {
    kill "$pid"
    wait "$pid" || fail "mailroom did not stop cleanly"
    pid=
}
start

# How many messages in an mbox, by Python's mailbox; and whether one has
# this subject.
count() { python3 -c 'import mailbox,sys; print(len(mailbox.mbox(sys.argv[1])))' "$root/var/mail/$1" 2>/dev/null || echo 0; }
has() {
    python3 - "$root/var/mail/$1" "$2" <<'PY'
import mailbox, sys
sys.exit(0 if any(m["Subject"] == sys.argv[2] for m in mailbox.mbox(sys.argv[1])) else 1)
PY
}
wait_mail() {
    for _ in $(seq 100); do
        has "$1" "$2" && return 0
        sleep 0.1
    done
    fail "\"$2\" did not reach $1's mbox"
}

step "SMTP (smtplib) to alice"
python3 - "$port" <<'PY' || fail "smtplib"
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "someone@elsewhere.example"
m["To"] = "alice@box.test"
m["Subject"] = "via smtp"
m.set_content("over SMTP\n")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.send_message(m)
PY
wait_mail alice "via smtp"
[ "$(in_root stat -c %U /var/mail/alice)" = alice ] || fail "/var/mail/alice does not belong to alice"

step "/usr/sbin/sendmail as bob"
printf 'Subject: via sendmail\n\nfrom cron\n' | as_user bob /usr/sbin/sendmail -i alice || fail "sendmail exit $?"
wait_mail alice "via sendmail"
python3 - "$root/var/mail/alice" "$(in_root id -u bob)" <<'PY' || fail "the sendmail message does not name bob's uid"
import mailbox, sys
m = [m for m in mailbox.mbox(sys.argv[1]) if m["Subject"] == "via sendmail"][0]
sys.exit(0 if any(f"userid {sys.argv[2]}" in r for r in m.get_all("Received")) else 1)
PY

step "mail(1) (bsd-mailx) as bob, read back by alice with mail(1)"
echo "from mailx" | as_user bob mail -s "via mailx" alice || fail "mail exit $?"
wait_mail alice "via mailx"
# Its header summary; x leaves without touching the mailbox.
headers=$(printf 'x\n' | as_user alice mail -f /var/mail/alice 2>&1) || true
for subject in "via smtp" "via sendmail" "via mailx"; do
    grep -q "$subject" <<<"$headers" || fail "mail -H does not list \"$subject\": $headers"
done

step "newaliases"
echo "team: alice, bob" >>"$root/etc/aliases"
out=$(in_root newaliases 2>&1) || fail "newaliases: $out"
python3 - "$port" <<'PY' || fail "mail to the new alias"
import smtplib, sys, time
for _ in range(50):
    try:
        with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
            s.sendmail("someone@elsewhere.example", ["team@box.test"],
                       b"Subject: to the team\r\n\r\nhello\r\n")
        sys.exit(0)
    except smtplib.SMTPRecipientsRefused:
        time.sleep(0.1)
sys.exit(1)
PY
wait_mail alice "to the team"
wait_mail bob "to the team"
in_root mailq >/dev/null || fail "mailq"

step "upgrade to revision 2, with mail waiting and a changed conffile"
stop
printf 'Subject: across the upgrade\n\nwaiting\n' | as_user bob /usr/sbin/sendmail -i alice ||
    fail "sendmail with the daemon stopped"
[ -n "$(ls "$root/var/spool/mailroom/queue/maildrop")" ] || fail "nothing in the maildrop"

in_root env DEBIAN_FRONTEND=noninteractive apt-get -q install -y -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "/tmp/$(basename "$deb2")" >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "the upgrade"; }
in_root dpkg-query -W -f='${Version}\n' mailroom | grep -q -- "-2$" || fail "not upgraded"
grep -q "127.0.0.1:$port" "$root/etc/mailroom/mailroom.toml" || fail "the changed conffile was replaced"
[ -n "$(ls "$root/var/spool/mailroom/queue/maildrop")" ] || fail "the upgrade emptied the maildrop"
start
wait_mail alice "across the upgrade"
stop

installed=$(in_root dpkg-query -W -f='${Installed-Size}' mailroom)
echo "figure: package $(basename "$deb"): $(stat -c %s "$deb") bytes; installed size ${installed} KiB"

step "purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get -q purge -y mailroom bsd-mailx >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "apt-get purge"; }
for gone in var/spool/mailroom etc/mailroom usr/sbin/sendmail usr/sbin/mailroom; do
    [ ! -e "$root/$gone" ] || fail "/$gone is left after purge"
done
! in_root getent passwd mailroom >/dev/null || fail "the mailroom account is left after purge"
[ -e "$root/etc/aliases" ] || fail "purge removed /etc/aliases"
[ "$(count alice)" -ge 5 ] || fail "alice's mail is gone"

step "ok"
