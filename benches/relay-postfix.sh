#!/usr/bin/env bash
# A private Postfix that relays everything it is given to a loopback
# smarthost: the reference the relay benchmark (benches/relay.rs) measures
# mailroom against. Needs root and Debian's "postfix" package, installed
# without starting the system's instance:
#
#   printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
#
# usage: relay-postfix.sh start DIR PORT RELAYPORT
#        relay-postfix.sh stop|pid|queued DIR
#
#   start   writes DIR/etc/{main,master}.cf and starts `postfix -c DIR/etc`:
#           smtpd on 127.0.0.1:PORT, relaying for 127.0.0.0/8 (mynetworks)
#           to relayhost [127.0.0.1]:RELAYPORT; prints the master's PID.
#   stop    `postfix -c DIR/etc stop`, then waits for the master's PID to
#           go (SIGKILL to that PID after 15 s).
#   pid     the master's PID: the root of the instance's process tree.
#   queued  how many messages are in its queue (maildrop, incoming,
#           active, deferred, hold), whatever their state.
#
# Postfix's defaults are kept for everything that decides how fast it
# relays: default_destination_concurrency_limit (20 connections to the
# relay at most, 5 to start with), connection reuse
# (smtp_connection_cache_on_demand), in_flow_delay, the process limits.
# Only what a private instance needs is set: its own directories, no
# local delivery, no chroot, the log in DIR/postfix.log (postlogd) rather
# than syslog, message_size_limit 50 MB.
set -euo pipefail

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start DIR PORT RELAYPORT | stop|pid|queued DIR"
command -v postfix >/dev/null || die "postfix is not installed (see the header of $0)"
dir=$(realpath -m -- "$dir")
conf=$dir/etc
queue=$dir/spool

master_pid() {
    local f=$queue/pid/master.pid p
    [ -r "$f" ] || return 1
    p=$(tr -d ' \n' < "$f")
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

wait_gone() {
    local pid=$1 tries=$2
    while [ "$tries" -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1; tries=$((tries - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

start() {
    local port=$1 relay=$2
    [ "$(id -u)" = 0 ] || die "must run as root"
    mkdir -p "$conf" "$queue" "$dir/data"
    chmod 0755 "$dir" "$conf" "$queue"
    chown root:root "$queue"
    chown postfix: "$dir/data"; chmod 0700 "$dir/data"
    cat > "$conf/main.cf" <<CF
# private relay benchmark instance: 127.0.0.1:$port -> [127.0.0.1]:$relay
compatibility_level = 3.6
queue_directory = $queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$relay
relay_domains =
local_transport = error:local delivery disabled in this instance
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
message_size_limit = 52428800
maillog_file = $dir/postfix.log
maillog_file_prefixes = $dir
CF
    cat > "$conf/master.cf" <<CF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$port inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
    touch "$dir/postfix.log"
    if master_pid >/dev/null; then die "already running in $dir"; fi
    # `check` creates the queue's directories with their owners. Postfix
    # tells why it fails on stderr only when that is a terminal.
    postfix -c "$conf" check >/dev/null 2>&1 ||
        die "postfix -c $conf check failed (run it on a terminal to see why)"
    postfix -c "$conf" start >/dev/null 2>&1 ||
        die "postfix -c $conf start failed (see $dir/postfix.log)"
    local tries=100
    while [ "$tries" -gt 0 ]; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && master_pid >/dev/null; then
            master_pid
            return 0
        fi
        sleep 0.1; tries=$((tries - 1))
    done
    die "postfix did not start listening on 127.0.0.1:$port (see $dir/postfix.log)"
}

case "$cmd" in
start)
    [ $# -eq 4 ] || die "usage: $0 start DIR PORT RELAYPORT"
    start "$3" "$4"
    ;;
stop)
    p=$(master_pid || true)
    [ -n "$p" ] || exit 0
    postfix -c "$conf" stop >/dev/null 2>&1 || true
    if ! wait_gone "$p" 150; then
        kill -KILL "$p" 2>/dev/null || true
        wait_gone "$p" 50 || die "postfix master $p did not exit"
    fi
    ;;
pid)
    master_pid || exit 1
    ;;
queued)
    n=0
    for d in maildrop incoming active deferred hold; do
        [ -d "$queue/$d" ] || continue
        n=$((n + $(find "$queue/$d" -type f | wc -l)))
    done
    echo "$n"
    ;;
*)
    die "usage: $0 start DIR PORT RELAYPORT | stop|pid|queued DIR"
    ;;
esac
