#!/usr/bin/env python3
"""A loopback smarthost for mailroom's relay tests (Python 3 stdlib only).

Listens on 127.0.0.1, port 0 (or --port), prints the port on the first line
of stdout, and speaks the server side of SMTP well enough to be a real peer
for an SMTP client: greeting, EHLO/HELO, MAIL (SIZE, BODY, SMTPUTF8, RET,
ENVID, AUTH), RCPT (NOTIFY, ORCPT), DATA with dot-unstuffing, RSET, NOOP,
QUIT, STARTTLS (with --cert/--key), AUTH PLAIN and LOGIN (with --auth
USER:PASSWORD), and PIPELINING. Each connection is served by a thread of
its own; any number of connections, one after the other or at once, and
any number of messages per connection.

Every accepted message is written to the spool directory as one file,
msg-NNNNNN.eml, atomically (written under .tmp-NNNNNN, then renamed): an
envelope of "key: value" lines, an empty line, then the message exactly as
it arrived after dot-unstuffing (CRLF line ends as sent). Envelope keys:

    connection: 1              the connection's number, from 1
    helo: mx.test.example      what EHLO/HELO said
    tls: yes|no                whether the message came over TLS
    auth: USER|-               who logged in, if anyone did
    mail-from: ADDRESS         the reverse path, without <>
    mail-params: P=V P2        the MAIL parameters as given
    rcpt: ADDRESS P=V ...      one line per accepted recipient
    data-8bit: yes|no          whether the data had octets over 127
    data-bare-lf: yes|no       whether a data line ended in a bare LF
    size: N                    octets of the message as stored

The transcript file gets one line per event, appended and flushed at once:
"N C: command" for each command line received (AUTH secrets redacted, so
no password ever appears), "N S: reply" for the first line of each reply,
"N * event" for connections, TLS and AUTH results, and "N ! VIOLATION
..." when the client breaks a rule this sink checks (pipelining without
PIPELINING, commands sent after a command that must end a pipelined group,
AUTH in the clear when TLS is on offer, data before STARTTLS's handshake).
"""

import argparse
import base64
import os
import socket
import ssl
import sys
import threading
import time

HANG_POINTS = (
    "CONNECT", "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
    "DOT", "RSET", "QUIT",
)


class Shared:
    """State across connections: counters and the files written."""

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.Lock()
        self.connections = 0
        self.messages = 0
        self.temp_answers = {}  # address -> 4xx answers given so far
        self.dot_answers = 0
        self.rcpt_replies = {}
        for spec in opts.rcpt_reply:
            address, _, code = spec.rpartition("=")
            if not address or not code.isdigit() or len(code) != 3:
                sys.exit(f"--rcpt-reply {spec!r}: want ADDRESS=CODE")
            self.rcpt_replies[address.lower()] = int(code)
        self.auth_user, self.auth_password = None, None
        if opts.auth:
            user, sep, password = opts.auth.partition(":")
            if not sep:
                sys.exit("--auth wants USER:PASSWORD")
            self.auth_user, self.auth_password = user, password
        self.tls_context = None
        if opts.cert and opts.key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(opts.cert, opts.key)
            self.tls_context = ctx
        os.makedirs(opts.spool, exist_ok=True)

    def log(self, conn, kind, text):
        line = f"{conn} {kind} {text}\n".encode("utf-8", "replace")
        with self.lock:
            with open(self.opts.transcript, "ab") as f:
                f.write(line)

    def next_connection(self):
        with self.lock:
            self.connections += 1
            return self.connections

    def rcpt_code(self, address):
        """The code configured for this recipient, counting 4xx answers
        so that one turns into 250 after --rcpt-temp-times of them."""
        code = self.rcpt_replies.get(address.lower())
        if code is None:
            return 250
        if 400 <= code < 500 and self.opts.rcpt_temp_times > 0:
            with self.lock:
                given = self.temp_answers.get(address.lower(), 0)
                if given >= self.opts.rcpt_temp_times:
                    return 250
                self.temp_answers[address.lower()] = given + 1
        return code

    def dot_code(self):
        code = self.opts.dot_reply
        if code is None:
            return 250
        with self.lock:
            if self.opts.dot_reply_times and self.dot_answers >= self.opts.dot_reply_times:
                return 250
            self.dot_answers += 1
        return code

    def store(self, envelope, data):
        with self.lock:
            self.messages += 1
            n = self.messages
        spool = self.opts.spool
        tmp = os.path.join(spool, f".tmp-{n:06d}")
        with open(tmp, "wb") as f:
            f.write(envelope.encode("utf-8", "replace"))
            f.write(b"\n")
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(spool, f"msg-{n:06d}.eml"))
        return n


class Closed(Exception):
    """The client went away (or the connection is to end)."""


TEXTS = {
    250: "2.0.0 ok",
    251: "2.1.5 ok, will forward",
    421: "4.3.2 service not available, closing (test)",
    450: "4.2.1 mailbox busy (test)",
    451: "4.3.0 try again later (test)",
    452: "4.2.2 mailbox full (test)",
    550: "5.1.1 no such user here (test)",
    551: "5.1.6 user not local (test)",
    552: "5.3.4 message too big (test)",
    553: "5.1.3 bad address (test)",
    554: "5.7.1 rejected (test)",
}


class Session:
    def __init__(self, shared, sock, number, peer):
        self.s = shared
        self.o = shared.opts
        self.sock = sock
        self.n = number
        self.peer = peer
        self.buf = b""
        self.tls = False
        self.helo = None
        self.esmtp = False
        self.user = None
        self.hang = self.o.hang_after is not None and (
            self.o.hang_connections == 0 or number <= self.o.hang_connections
        )
        self.reset()

    def reset(self):
        self.mail = None
        self.mail_params = []
        self.rcpts = []

    # -- IO ---------------------------------------------------------------

    def log(self, kind, text):
        self.s.log(self.n, kind, text)

    def recv(self):
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError) as e:
            raise Closed(f"read: {e}")
        if not data:
            raise Closed("end of stream")
        self.buf += data

    def readline(self, limit=4096):
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise Closed("line too long")
            self.recv()
        i = self.buf.index(b"\n")
        line, self.buf = self.buf[: i + 1], self.buf[i + 1:]
        return line

    def send(self, code, *lines):
        lines = lines or (TEXTS.get(code, "ok"),)
        out = b""
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out += f"{code}{sep}{text}\r\n".encode()
        self.log("S:", f"{code} {lines[0]}" + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""))
        try:
            self.sock.sendall(out)
        except OSError as e:
            raise Closed(f"write: {e}")

    def hang_here(self, point):
        """Never answer again: read and drop what comes until the client
        gives up, or --hang-seconds pass."""
        if not self.hang or self.o.hang_after != point:
            return
        self.log("*", f"hanging after {point}")
        deadline = time.monotonic() + self.o.hang_seconds
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ssl.SSLError, OSError):
                break
            if not data:
                break
        raise Closed("hung up")

    # -- the session --------------------------------------------------------

    def run(self):
        self.sock.settimeout(self.o.idle_seconds)
        self.log("*", f"connect from {self.peer[0]}:{self.peer[1]}")
        try:
            if self.o.implicit_tls:
                self.start_tls()
            self.hang_here("CONNECT")
            if self.o.greeting != 220:
                self.send(self.o.greeting, f"{self.o.hostname} not now (test)")
                raise Closed("greeting refused")
            self.send(220, f"{self.o.hostname} ESMTP test smarthost")
            while True:
                line = self.readline()
                self.command(line)
        except Closed as e:
            self.log("*", f"closed: {e}")
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def start_tls(self):
        try:
            self.sock = self.s.tls_context.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.log("*", f"TLS handshake failed: {e}")
            raise Closed("TLS failed")
        self.tls = True
        self.log("*", f"TLS established: {self.sock.version()}")

    def offers_auth(self):
        if not self.s.auth_user:
            return False
        return self.tls or self.s.tls_context is None or self.o.auth_in_clear

    def capabilities(self):
        caps = []
        if self.o.pipelining:
            caps.append("PIPELINING")
        if self.o.size is not None:
            caps.append(f"SIZE {self.o.size}")
        if self.o.eightbitmime:
            caps.append("8BITMIME")
        if self.o.smtputf8:
            caps.append("SMTPUTF8")
        if self.o.dsn:
            caps.append("DSN")
        if self.s.tls_context is not None and not self.tls and self.o.starttls and not self.o.implicit_tls:
            caps.append("STARTTLS")
        if self.offers_auth():
            caps.append("AUTH " + " ".join(self.o.auth_mechs.split(",")))
        caps.append("ENHANCEDSTATUSCODES")
        return caps

    def violation(self, text):
        self.log("!", f"VIOLATION {text}")

    def command(self, raw):
        if not raw.endswith(b"\r\n"):
            self.violation("command line without CRLF")
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        shown = line
        if verb == "AUTH":
            mech = arg.split(" ")[0]
            shown = f"AUTH {mech}" + (" <redacted>" if " " in arg.strip() else "")
        self.log("C:", shown)
        # Pipelining: nothing may follow these in one group (RFC 2920 3.1),
        # and nothing at all may be sent ahead without PIPELINING.
        if self.buf:
            if not self.o.pipelining:
                self.violation(f"{verb}: sent ahead of its reply without PIPELINING")
            elif verb in ("EHLO", "HELO", "STARTTLS", "AUTH", "DATA", "QUIT", "NOOP"):
                self.violation(f"{verb}: more sent before its reply")
        self.hang_here(verb)
        handler = getattr(self, "do_" + verb, None)
        if handler is None:
            self.send(500, "5.5.2 command not recognized")
            return
        handler(arg.strip())

    def do_EHLO(self, arg):
        if not arg:
            return self.send(501, "5.5.4 EHLO needs a name")
        self.helo, self.esmtp = arg, True
        self.reset()
        self.send(250, f"{self.o.hostname} hello {arg}", *self.capabilities())

    def do_HELO(self, arg):
        if not arg:
            return self.send(501, "5.5.4 HELO needs a name")
        self.helo, self.esmtp = arg, False
        self.reset()
        self.send(250, f"{self.o.hostname} hello {arg}")

    def do_NOOP(self, arg):
        self.send(250, "2.0.0 ok")

    def do_RSET(self, arg):
        self.reset()
        self.send(250, "2.0.0 reset")

    def do_VRFY(self, arg):
        self.send(252, "2.5.2 cannot VRFY")

    def do_QUIT(self, arg):
        self.send(221, "2.0.0 bye")
        raise Closed("QUIT")

    def do_STARTTLS(self, arg):
        if self.s.tls_context is None or not self.o.starttls or self.tls or self.o.implicit_tls:
            return self.send(502, "5.5.1 STARTTLS not offered")
        self.send(220, "2.0.0 ready to start TLS")
        if self.buf:
            # RFC 3207 6: nothing sent before the handshake is kept.
            self.violation(f"{len(self.buf)} octets sent after STARTTLS before the handshake")
            self.buf = b""
        self.start_tls()
        self.helo, self.esmtp, self.user = None, False, None
        self.reset()

    def do_AUTH(self, arg):
        if not self.esmtp:
            return self.send(503, "5.5.1 EHLO first")
        if self.user is not None:
            return self.send(503, "5.5.1 already authenticated")
        if self.mail is not None:
            return self.send(503, "5.5.1 not during a transaction")
        if not self.s.auth_user:
            return self.send(502, "5.5.1 AUTH not offered")
        if not self.tls:
            self.log("*", "AUTH in the clear")
            if self.s.tls_context is not None and not self.o.auth_in_clear:
                self.violation("AUTH before TLS although STARTTLS is offered")
                return self.send(538, "5.7.11 encryption required for AUTH")
        words = arg.split(" ")
        mech = words[0].upper()
        initial = words[1] if len(words) > 1 else None
        if mech not in [m.upper() for m in self.o.auth_mechs.split(",")]:
            return self.send(504, "5.5.4 mechanism not offered")
        try:
            if mech == "PLAIN":
                if initial is None:
                    self.send(334, "")
                    initial = self.secret_line()
                if initial == "*":
                    return self.send(501, "5.0.0 AUTH cancelled")
                parts = base64.b64decode(initial, validate=True).split(b"\0")
                if len(parts) != 3:
                    return self.send(501, "5.5.2 bad PLAIN response")
                user, password = parts[1].decode(), parts[2].decode()
            elif mech == "LOGIN":
                if initial is None:
                    self.send(334, "VXNlcm5hbWU6")
                    initial = self.secret_line()
                if initial == "*":
                    return self.send(501, "5.0.0 AUTH cancelled")
                user = base64.b64decode(initial, validate=True).decode()
                self.send(334, "UGFzc3dvcmQ6")
                answer = self.secret_line()
                if answer == "*":
                    return self.send(501, "5.0.0 AUTH cancelled")
                password = base64.b64decode(answer, validate=True).decode()
            else:
                return self.send(504, "5.5.4 mechanism not spoken here")
        except (ValueError, UnicodeDecodeError):
            return self.send(501, "5.5.2 cannot decode the response")
        if user == self.s.auth_user and password == self.s.auth_password:
            self.user = user
            self.log("*", f"AUTH {mech} succeeded for {user}")
            self.send(235, "2.7.0 authenticated")
        else:
            self.log("*", f"AUTH {mech} failed for {user}")
            self.send(535, "5.7.8 authentication credentials invalid")

    def secret_line(self):
        line = self.readline().rstrip(b"\r\n").decode("ascii", "replace")
        self.log("C:", "<AUTH response redacted>")
        return line

    def do_MAIL(self, arg):
        if not self.helo:
            return self.send(503, "5.5.1 EHLO first")
        if self.mail is not None:
            return self.send(503, "5.5.1 nested MAIL")
        if not arg.upper().startswith("FROM:"):
            return self.send(501, "5.5.4 syntax: MAIL FROM:<address>")
        if self.o.require_auth and self.user is None:
            return self.send(530, "5.7.0 authentication required")
        path, params = split_path(arg[5:])
        if path is None:
            return self.send(501, "5.1.7 bad sender address syntax")
        if params and not self.esmtp:
            return self.send(555, "5.5.4 parameters after HELO")
        for p in params:
            key, _, value = p.partition("=")
            key = key.upper()
            if key == "SIZE" and self.o.size is not None and value.isdigit():
                if self.o.size and int(value) > self.o.size:
                    return self.send(552, "5.3.4 message size exceeds the fixed maximum")
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME") and (
                value.upper() == "7BIT" or self.o.eightbitmime
            ):
                pass
            elif key == "SMTPUTF8" and not value and self.o.smtputf8:
                pass
            elif key == "RET" and value.upper() in ("FULL", "HDRS") and self.o.dsn:
                pass
            elif key == "ENVID" and value and self.o.dsn:
                pass
            elif key == "AUTH" and self.offers_auth():
                pass
            else:
                return self.send(555, f"5.5.4 {p}: parameter not recognized or not offered")
        self.mail, self.mail_params = path, params
        self.send(250, "2.1.0 sender ok")

    def do_RCPT(self, arg):
        if self.mail is None:
            return self.send(503, "5.5.1 MAIL first")
        if not arg.upper().startswith("TO:"):
            return self.send(501, "5.5.4 syntax: RCPT TO:<address>")
        path, params = split_path(arg[3:])
        if not path:
            return self.send(501, "5.1.3 bad recipient address syntax")
        for p in params:
            key, _, value = p.partition("=")
            key = key.upper()
            ok = self.o.dsn and (
                (key == "NOTIFY" and value and all(
                    w in ("NEVER", "SUCCESS", "FAILURE", "DELAY") for w in value.upper().split(",")))
                or (key == "ORCPT" and ";" in value)
            )
            if not ok:
                return self.send(555, f"5.5.4 {p}: parameter not recognized or not offered")
        code = self.s.rcpt_code(path)
        if code == 250:
            self.rcpts.append((path, params))
            return self.send(250, "2.1.5 recipient ok")
        self.send(code, TEXTS.get(code, f"{code // 100}.0.0 refused (test)"))

    def do_DATA(self, arg):
        if self.mail is None:
            return self.send(503, "5.5.1 MAIL first")
        if not self.rcpts:
            return self.send(554, "5.5.1 no valid recipients")
        self.send(354, "end data with <CR><LF>.<CR><LF>")
        data = bytearray()
        bare_lf = False
        while True:
            line = self.readline(limit=1 << 20)
            if line == b".\r\n":
                break
            if line == b".\n":
                self.violation("data ended with a bare LF dot")
                break
            if not line.endswith(b"\r\n"):
                bare_lf = True
            if line.startswith(b"."):
                line = line[1:]
            data += line
        self.log("C:", f"<message: {len(data)} octets>")
        self.hang_here("DOT")
        if self.o.size and len(data) > self.o.size:
            self.reset()
            return self.send(552, "5.3.4 message size exceeds the fixed maximum")
        code = self.s.dot_code()
        if code != 250:
            self.reset()
            return self.send(code, TEXTS.get(code, f"{code // 100}.0.0 refused (test)"))
        envelope = [
            f"connection: {self.n}",
            f"helo: {self.helo}",
            f"tls: {'yes' if self.tls else 'no'}",
            f"auth: {self.user or '-'}",
            f"mail-from: {self.mail}",
            f"mail-params: {' '.join(self.mail_params)}",
        ]
        envelope += [f"rcpt: {' '.join([a] + p)}" for a, p in self.rcpts]
        envelope += [
            f"data-8bit: {'yes' if any(b > 127 for b in data) else 'no'}",
            f"data-bare-lf: {'yes' if bare_lf else 'no'}",
            f"size: {len(data)}",
        ]
        n = self.s.store("".join(e + "\n" for e in envelope), bytes(data))
        self.reset()
        self.send(250, f"2.0.0 ok: queued as TEST{n:06d}")


def split_path(text):
    """`<address> PARAM=value ...` (a space after the colon tolerated):
    the address without its brackets, and the parameters. None for the
    address when there are no brackets."""
    text = text.strip()
    if not text.startswith("<") or ">" not in text:
        return None, []
    end = text.index(">")
    return text[1:end], [p for p in text[end + 1:].split(" ") if p]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spool", required=True, help="where accepted messages are written")
    p.add_argument("--transcript", required=True, help="the file commands are logged to")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--hostname", default="smarthost.test")
    p.add_argument("--greeting", type=int, default=220, help="a code other than 220 refuses each connection")
    p.add_argument("--cert", help="PEM certificate chain for TLS")
    p.add_argument("--key", help="PEM private key for TLS")
    p.add_argument("--no-starttls", dest="starttls", action="store_false",
                   help="do not offer STARTTLS even with a certificate")
    p.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte (needs --cert, --key)")
    p.add_argument("--no-8bitmime", dest="eightbitmime", action="store_false")
    p.add_argument("--no-smtputf8", dest="smtputf8", action="store_false")
    p.add_argument("--no-dsn", dest="dsn", action="store_false")
    p.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    p.add_argument("--size", type=int, help="offer SIZE N (0: no limit) and enforce it")
    p.add_argument("--auth", help="USER:PASSWORD to accept with AUTH")
    p.add_argument("--auth-mechs", default="PLAIN,LOGIN", help="mechanisms offered, comma-separated")
    p.add_argument("--auth-in-clear", action="store_true",
                   help="offer and take AUTH before TLS even when STARTTLS is offered")
    p.add_argument("--require-auth", action="store_true", help="530 for MAIL before AUTH")
    p.add_argument("--rcpt-reply", action="append", default=[], metavar="ADDRESS=CODE",
                   help="answer RCPT for ADDRESS with CODE (repeatable)")
    p.add_argument("--rcpt-temp-times", type=int, default=0, metavar="K",
                   help="a 4xx of --rcpt-reply becomes 250 after K such answers per address (0: never)")
    p.add_argument("--dot-reply", type=int, help="answer the final dot with this code")
    p.add_argument("--dot-reply-times", type=int, default=0, metavar="K",
                   help="--dot-reply only for the first K messages, then 250 (0: always)")
    p.add_argument("--hang-after", choices=HANG_POINTS,
                   help="never answer this command (CONNECT: no greeting; DOT: the final dot) or anything after it")
    p.add_argument("--hang-connections", type=int, default=0, metavar="N",
                   help="hang only on the first N connections (0: all)")
    p.add_argument("--hang-seconds", type=float, default=30.0, help="the longest a hung connection is held")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="a silent client is dropped after this")
    opts = p.parse_args()
    if (opts.cert is None) != (opts.key is None):
        sys.exit("--cert and --key go together")
    if opts.implicit_tls and not opts.cert:
        sys.exit("--implicit-tls needs --cert and --key")
    shared = Shared(opts)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", opts.port))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    while True:
        sock, peer = listener.accept()
        number = shared.next_connection()
        session = Session(shared, sock, number, peer)
        threading.Thread(target=session.run, daemon=True).start()


if __name__ == "__main__":
    main()
