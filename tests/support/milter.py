#!/usr/bin/env python3
"""A milter for tests, on the raw protocol (version 6, Python stdlib only).

It listens on 127.0.0.1 (an ephemeral port, printed as the first line of
stdout) or on a Unix socket (--unix PATH, "unix" printed), and records
every packet it receives in --events, a line each: the connection's
number, the command's code, its arguments and the macros sent before it,
separated by tabs, list items by \x1f, with backslash, CR, LF, tab and
\x1f escaped (\\ \r \n \t \s). Body chunks are recorded with their
octets (latin-1).

What it says is set by --rules, a JSON list of rules, each
{"at": STAGE, "do": ACTION, ...} where STAGE is one of connect helo
mail rcpt data header eoh body eom, and the first rule whose stage
matches (and whose optional "match" is in the command's arguments) is
applied:
  reject, tempfail, discard, accept, continue   the plain replies
  reply        SMFIR_REPLYCODE with "text"
  hang         say nothing, ever (the connection stays open)
  close        close the connection
  garbage      send a packet no milter sends
  progress     send "n" progress packets, "gap" seconds apart, then continue
At "eom" a rule may also carry "edits": a list of
  ["addheader", name, value] ["insheader", index, name, value]
  ["chgheader", index, name, value] ["addrcpt", rcpt] ["delrcpt", rcpt]
  ["replbody", text] ["quarantine", reason] ["chgfrom", sender]
sent before the final reply. --steps and --actions set what it asks for
in the negotiation.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

STAGES = {
    b"C": "connect", b"H": "helo", b"M": "mail", b"R": "rcpt", b"T": "data",
    b"L": "header", b"N": "eoh", b"B": "body", b"E": "eom",
}

lock = threading.Lock()


def esc(s):
    return (str(s).replace("\\", "\\\\").replace("\r", "\\r")
            .replace("\n", "\\n").replace("\t", "\\t").replace("\x1f", "\\s"))


def record(path, event):
    args = "\x1f".join(esc(a) for a in event.get("args", []))
    macros = "\x1f".join(esc(k) + "=" + esc(v)
                          for k, v in event.get("macros", {}).items())
    line = "\t".join([str(event["conn"]), event["cmd"], args, macros])
    with lock:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_packet(conn):
    head = read_exact(conn, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    body = read_exact(conn, length)
    if body is None:
        return None
    return body[:1], body[1:]


def send(conn, code, data=b""):
    conn.sendall(struct.pack(">I", len(data) + 1) + code + data)


def cstr(s):
    return s.encode("utf-8") + b"\0"


def strings(data):
    return [s.decode("latin-1") for s in data.split(b"\0")[:-1]]


def serve(conn, n, args, rules):
    macros = {}
    try:
        while True:
            packet = read_packet(conn)
            if packet is None:
                return
            code, data = packet
            if code == b"O":
                version, actions, steps = struct.unpack(">III", data[:12])
                record(args.events, {"conn": n, "cmd": "O",
                                     "args": [version, actions, steps]})
                send(conn, b"O", struct.pack(">III", 6, args.actions, args.steps))
                continue
            if code == b"D":
                pairs = strings(data[1:])
                macros = dict(zip(pairs[0::2], pairs[1::2]))
                continue
            if code in (b"A", b"Q"):
                record(args.events, {"conn": n, "cmd": code.decode()})
                if code == b"Q":
                    return
                continue
            if code == b"B":
                shown = [data.decode("latin-1")]
            elif code == b"C":
                host = data.split(b"\0", 1)[0].decode("latin-1")
                rest = data.split(b"\0", 1)[1]
                family = rest[:1].decode()
                addr = strings(rest[3:])[0] if family in "46L" else ""
                shown = [host, family, addr]
            else:
                shown = strings(data)
            record(args.events, {"conn": n, "cmd": code.decode(), "args": shown,
                                 "macros": macros})
            macros = {}
            stage = STAGES.get(code)
            rule = next((r for r in rules if r["at"] == stage and
                         r.get("match", "") in " ".join(shown)), None)
            if stage == "eom" and rule:
                for edit in rule.get("edits", []):
                    kind, rest = edit[0], edit[1:]
                    if kind == "addheader":
                        send(conn, b"h", cstr(rest[0]) + cstr(rest[1]))
                    elif kind in ("insheader", "chgheader"):
                        send(conn, b"i" if kind == "insheader" else b"m",
                             struct.pack(">I", rest[0]) + cstr(rest[1]) + cstr(rest[2]))
                    elif kind == "addrcpt":
                        send(conn, b"+", cstr(rest[0]))
                    elif kind == "delrcpt":
                        send(conn, b"-", cstr(rest[0]))
                    elif kind == "replbody":
                        body = rest[0].encode("utf-8")
                        for i in range(0, len(body), 1000):
                            send(conn, b"b", body[i:i + 1000])
                    elif kind == "quarantine":
                        send(conn, b"q", cstr(rest[0]))
                    elif kind == "chgfrom":
                        send(conn, b"e", cstr(rest[0]))
            action = rule["do"] if rule else "continue"
            if action == "hang":
                time.sleep(3600)
                return
            if action == "close":
                return
            if action == "garbage":
                send(conn, b"Z", b"nonsense")
                continue
            if action == "progress":
                for _ in range(rule.get("n", 3)):
                    time.sleep(rule.get("gap", 1))
                    send(conn, b"p")
                action = "continue"
            if action == "reply":
                send(conn, b"y", cstr(rule["text"]))
                continue
            send(conn, {"continue": b"c", "accept": b"a", "reject": b"r",
                        "tempfail": b"t", "discard": b"d"}[action])
    except OSError:
        return
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", required=True)
    p.add_argument("--rules", default="[]")
    p.add_argument("--unix")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--actions", type=int, default=0x1ff & ~0x100)
    args = p.parse_args()
    rules = json.loads(args.rules)
    if args.unix:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(args.unix)
        print("unix", flush=True)
    else:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
    srv.listen(64)
    n = 0
    while True:
        conn, _ = srv.accept()
        n += 1
        threading.Thread(target=serve, args=(conn, n, args, rules), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
