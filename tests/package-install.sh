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
#   - boots the root under systemd (systemd-nspawn, a private network of
#     its own), where the installed units run as shipped: port 25 from
#     mailroom.socket, readiness, STATUS, mail over SMTP and through
#     sendmail, a reload, newaliases, journal priorities, a stop, a start
#     by the socket, nothing refused by the sandbox, and the security
#     score; then the same for the unprivileged virtual-mailbox unit,
#     systemd/mailroom.service;
#   - purges: spool, queue, configuration and account gone, /etc/aliases
#     kept.
# Run by tests/package.rs (as root; it needs debootstrap, cargo-deb and
# systemd-nspawn, which tests/install-test-tools.sh installs), or by hand:
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
nspawn=
leader=
log=$work/mailroom.log

cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$nspawn" ]; then
        # The container's init first: that ends its whole PID namespace,
        # which outlives systemd-nspawn.
        [ -z "$leader" ] || kill -KILL "$leader" 2>/dev/null || true
        kill -KILL "$nspawn" 2>/dev/null || true
        wait "$nspawn" 2>/dev/null || true
    fi
    # The mounts are in this namespace alone; they go with it, but the
    # tree cannot be removed while they are there.
    umount -R "$root/proc" "$root/dev" 2>/dev/null || true
    # What a container stopped by force may leave mounted under the root.
    awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" || true; done
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
    "/tmp/$(basename "$deb")" bsd-mailx systemd systemd-sysv >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; fail "apt-get install"; }
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

# Under systemd: the root booted with systemd as its init, in a network
# namespace of its own that has only loopback (port 25 inside is nobody
# else's). Commands run inside through nsenter; the mail is read from
# here, in the same tree. If systemd cannot boot in a container on this
# machine, that is said and the rest goes on.
inside() { nsenter -t "$leader" -a "$@"; }
in_net() { nsenter -t "$leader" -n "$@"; }
unit_is() { [ "$(inside systemctl show -p "$2" --value "$1")" = "$3" ]; }
journal() { inside journalctl -b -u mailroom.service -o cat --no-pager "$@"; }
# Whether the journal (with journalctl's arguments after the pattern) has
# a line matching PATTERN; read whole, so that no pipe breaks under
# pipefail.
journal_has() {
    local pattern=$1
    shift
    grep -q -- "$pattern" <<<"$(journal "$@")"
}
maildir_count() {
    python3 -c 'import mailbox,sys; print(len(mailbox.Maildir(sys.argv[1], create=False)))' "$1" 2>/dev/null || echo 0
}
# Mail over SMTP to port 25 inside: RCPT SUBJECT. An unknown recipient is
# retried for a while (an alias that a reload has yet to add).
smtp_in() {
    in_net python3 - "$1" "$2" <<'PY'
import smtplib, sys, time
for _ in range(50):
    try:
        with smtplib.SMTP("127.0.0.1", 25, timeout=30) as s:
            s.sendmail("someone@elsewhere.example", [sys.argv[1]],
                       f"Subject: {sys.argv[2]}\r\n\r\nhello\r\n".encode())
        sys.exit(0)
    except smtplib.SMTPRecipientsRefused:
        time.sleep(0.1)
sys.exit(1)
PY
}
boot() {
    umount -R "$root/proc" "$root/dev"
    rm -f "$root/usr/sbin/policy-rc.d"
    systemd-nspawn -D "$root" --private-network --register=no --keep-unit -b \
        </dev/null >"$work/boot.log" 2>&1 &
    nspawn=$!
    leader=
    for _ in $(seq 100); do
        for child in $(pgrep -P "$nspawn"); do
            [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ] && leader=$child
        done
        [ -n "$leader" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] || return 1
    # systemctl answers once systemd has its socket; then it waits out
    # the start-up.
    for _ in $(seq 300); do
        inside test -S /run/systemd/private && break
        sleep 0.1
    done
    state=$(timeout 120 nsenter -t "$leader" -a systemctl is-system-running --wait) || true
    [ "$state" = running ] || [ "$state" = degraded ]
}
poweroff() {
    [ -z "$leader" ] || inside systemctl poweroff 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$nspawn" 2>/dev/null || break
        sleep 0.1
    done
    [ -z "$leader" ] || kill -KILL "$leader" 2>/dev/null || true
    kill -KILL "$nspawn" 2>/dev/null || true
    wait "$nspawn" || true
    nspawn=
    leader=
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
}
# What every run under systemd must show in the end: a clean stop, and no
# call refused by the unit's system call filter or sandbox.
clean_stop() {
    # (Its warning that the socket can start it again is the point.)
    inside systemctl stop mailroom.service 2>/dev/null || fail "systemctl stop"
    unit_is mailroom.service Result success || fail "stop: $(inside systemctl status --no-pager mailroom.service)"
    unit_is mailroom.service ExecMainStatus 0 || fail "stop: exit status $(inside systemctl show -p ExecMainStatus --value mailroom.service)"
    ! grep -i "operation not permitted\|permission denied" <<<"$(journal)" ||
        fail "the sandbox refused mailroom something: $(journal)"
}

step "booting the root under systemd (systemd-nspawn)"
if ! boot; then
    echo "package-install: note: systemd did not boot in a container here (state: ${state:-none}), so the units were not run under it: $(tail -5 "$work/boot.log" | tr '\n' ' ')"
    poweroff
else
    step "under systemd: mailroom.socket on port 25, mailroom.service ready"
    [ "$(inside systemctl is-active mailroom.socket)" = active ] || fail "mailroom.socket is not active"
    [ "$(inside systemctl is-active mailroom.service)" = active ] ||
        fail "mailroom.service: $(inside systemctl status --no-pager mailroom.service) $(journal)"
    # Type=notify: active means READY=1 came.
    status=$(inside systemctl show -p StatusText --value mailroom.service)
    grep -Eq "^[0-9]+ connections? open, [0-9]+ messages? in the queue$" <<<"$status" || fail "STATUS=: \"$status\""
    journal_has "listening on \[::\]:25 (.*), from the service manager" ||
        fail "port 25 was not passed by systemd: $(journal)"

    step "under systemd: SMTP to port 25, and sendmail as bob"
    smtp_in alice@box.test "under systemd" || fail "SMTP to port 25: $(journal)"
    wait_mail alice "under systemd"
    printf 'Subject: sendmail under systemd\n\nfrom cron\n' |
        inside setpriv --reuid=bob --regid=bob --init-groups env -i PATH=/usr/bin:/bin HOME=/home/bob \
            /usr/sbin/sendmail -i alice || fail "sendmail as bob"
    wait_mail alice "sendmail under systemd"

    step "under systemd: systemctl reload, newaliases"
    main=$(inside systemctl show -p MainPID --value mailroom.service)
    inside systemctl reload mailroom.service || fail "systemctl reload"
    for _ in $(seq 100); do
        journal_has "configuration reloaded from /etc/mailroom/mailroom.toml" && break
        sleep 0.1
    done
    journal_has "configuration reloaded" || fail "no reload: $(journal)"
    unit_is mailroom.service MainPID "$main" || fail "the reload restarted mailroom"
    [ "$(inside systemctl is-active mailroom.service)" = active ] || fail "not active after the reload"
    echo "crew: bob" >>"$root/etc/aliases"
    out=$(inside newaliases 2>&1) || fail "newaliases: $out"
    journal_has "reload asked by uid 0" || fail "newaliases did not reach the daemon: $out"
    smtp_in crew@box.test "to the crew" || fail "mail to the alias newaliases added"
    wait_mail bob "to the crew"

    step "under systemd: journal priorities"
    journal_has "mailroom::server: ready: " -p info || fail "journalctl -p info has no ready line"
    ! journal_has "mailroom::server: ready: " -p warning || fail "journalctl -p warning shows an info line"

    step "under systemd: stop, then a start by the socket"
    clean_stop
    [ "$(inside systemctl is-active mailroom.socket)" = active ] || fail "mailroom.socket stopped with the service"
    smtp_in alice@box.test "woken by the socket" || fail "SMTP after the stop"
    wait_mail alice "woken by the socket"
    [ "$(inside systemctl is-active mailroom.service)" = active ] || fail "the socket did not start mailroom.service"
    echo "figure: under systemd, the package's unit: $(inside systemd-analyze security --no-pager mailroom.service | tail -1)"
    clean_stop

    step "under systemd: the unprivileged unit, systemd/mailroom.service, with virtual mailboxes"
    cp "$project/systemd/mailroom.service" "$root/etc/systemd/system/mailroom.service"
    ln -s /usr/sbin/mailroom "$root/usr/local/bin/mailroom"
    cp -p "$root/etc/mailroom/mailroom.toml" "$work/conffile"
    cat >"$root/etc/mailroom/mailroom.toml" <<'EOF'
hostname = "box.test"
local_domains = ["box.test", "localhost"]
spool_dir = "/var/spool/mailroom/spool"
queue_dir = "/var/spool/mailroom/queue"
[server]
listen = ["0.0.0.0:25"]
[mailbox.carol]
maildir = "/var/mail/mailroom/carol/Maildir"
[mailbox.postmaster]
maildir = "/var/mail/mailroom/postmaster/Maildir"
EOF
    # As the unit's install notes say, and the spool the root unit made
    # handed over.
    inside install -d -o mailroom -g mailroom -m 0700 /var/mail/mailroom
    inside chown -R mailroom:mailroom /var/spool/mailroom
    inside systemctl daemon-reload
    inside systemctl start mailroom.service || fail "the unprivileged unit: $(journal)"
    [ "$(inside systemctl show -p User --value mailroom.service)" = mailroom ] || fail "not the unprivileged unit"
    smtp_in carol@box.test "unprivileged" || fail "SMTP to the unprivileged unit: $(journal)"
    printf 'Subject: unprivileged sendmail\n\nfrom cron\n' |
        inside setpriv --reuid=bob --regid=bob --init-groups env -i PATH=/usr/bin:/bin HOME=/home/bob \
            /usr/sbin/sendmail -i carol || fail "sendmail as bob"
    for _ in $(seq 100); do
        [ "$(maildir_count "$root/var/mail/mailroom/carol/Maildir")" = 2 ] && break
        sleep 0.1
    done
    [ "$(maildir_count "$root/var/mail/mailroom/carol/Maildir")" = 2 ] || fail "carol's Maildir: $(journal)"
    inside systemctl reload mailroom.service || fail "systemctl reload"
    echo "figure: under systemd, the unprivileged unit: $(inside systemd-analyze security --no-pager mailroom.service | tail -1)"
    clean_stop

    rm "$root/etc/systemd/system/mailroom.service" "$root/usr/local/bin/mailroom"
    cp -p "$work/conffile" "$root/etc/mailroom/mailroom.toml"
    poweroff
fi

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
