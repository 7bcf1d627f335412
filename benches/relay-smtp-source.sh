#!/usr/bin/env bash
# The relay benchmark's SMTP workload driven by Postfix's own load
# generator, smtp-source, instead of benches/relay.rs's client: 8 sessions,
# 2000 messages of 4 KiB, a new connection per message, to mailroom (a
# local alias whose member is remote) and to a private Postfix
# (benches/relay-postfix.sh), each relaying to a fresh smtp-sink; rounds
# alternate the two. Prints, per run, the seconds until smtp-source was
# done and until the queue was empty (mailroom: 2000 "relayed to" lines
# in its log; Postfix: relay-postfix.sh queued = 0). Needs root, Debian's
# postfix package (see relay-postfix.sh) and a release build of mailroom.
# Everything listens on 127.0.0.1; every wait is bounded.
#
# usage: benches/relay-smtp-source.sh [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/../target/release/mailroom"
rounds=${1:-3}
N=2000

now() { date +%s.%N; }

sink() { # PORT DIR -> pid
    smtp-sink -u nobody -c "127.0.0.1:$1" 5000 >"$2/sink.out" 2>&1 &
    echo $!
}

ours() {
    local d port sinkport sinkpid pid start accepted n
    d=$(mktemp -d /var/tmp/relay-ours.XXXX)
    sinkport=$((20000 + RANDOM % 1000))
    sinkpid=$(sink "$sinkport" "$d")
    echo "far: someone@remote.example" >"$d/aliases"
    cat >"$d/mailroom.toml" <<EOC
hostname = "mx.test.example"
local_domains = ["localhost"]
spool_dir = "$d/spool"
queue_dir = "$d/queue"
aliases = "$d/aliases"
[server]
listen = ["127.0.0.1:0"]
[mailbox.postmaster]
maildir = "$d/postmaster"
[relay]
host = "127.0.0.1"
port = $sinkport
tls = "none"
EOC
    "$bin" --config "$d/mailroom.toml" >"$d/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$d/log" && break; sleep 0.05; done
    port=$(grep -o "listening on 127.0.0.1:[0-9]*" "$d/log" | cut -d: -f2)
    start=$(now)
    smtp-source -s 8 -m $N -l 4096 -f load@client.example -t far@localhost "127.0.0.1:$port"
    accepted=$(now)
    for _ in $(seq 600); do
        n=$(grep -c "relayed to" "$d/log" || true)
        [ "$n" -ge $N ] && break
        sleep 0.05
    done
    printf 'mailroom  accepted %.2f s  relayed %.2f s  (%s relayed)\n' \
        "$(echo "$accepted - $start" | bc)" "$(echo "$(now) - $start" | bc)" "$n"
    kill "$pid" "$sinkpid"
    wait "$pid" "$sinkpid" 2>/dev/null || true
    rm -rf "$d"
}

postfix() {
    local d port sinkport sinkpid start accepted q
    d=$(mktemp -d /var/tmp/relay-postfix.XXXX)
    chmod 755 "$d"
    sinkport=$((21000 + RANDOM % 1000))
    port=$((22000 + RANDOM % 1000))
    sinkpid=$(sink "$sinkport" "$d")
    "$here/relay-postfix.sh" start "$d/pf" "$port" "$sinkport" >/dev/null
    start=$(now)
    smtp-source -s 8 -m $N -l 4096 -f load@client.example -t someone@remote.example "127.0.0.1:$port"
    accepted=$(now)
    for _ in $(seq 600); do
        q=$("$here/relay-postfix.sh" queued "$d/pf")
        [ "$q" -eq 0 ] && break
        sleep 0.05
    done
    printf 'postfix   accepted %.2f s  relayed %.2f s  (%s left)\n' \
        "$(echo "$accepted - $start" | bc)" "$(echo "$(now) - $start" | bc)" "$q"
    "$here/relay-postfix.sh" stop "$d/pf"
    kill "$sinkpid"
    wait "$sinkpid" 2>/dev/null || true
    rm -rf "$d"
}

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then ours; postfix; else postfix; ours; fi
done
