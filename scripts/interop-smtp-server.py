"""SMTP servers for seatwarden's interop tests, built on aiosmtpd (PyPI).

Starts four aiosmtpd controllers on loopback ports sharing one capture handler:

  plain     no TLS, no AUTH (a local relay)
  auth      no TLS, AUTH required (PLAIN/LOGIN against --user / --password-file)
  starttls  STARTTLS required, then AUTH required
  smtps     implicit TLS, AUTH required

A throwaway CA and a server certificate for 127.0.0.1/localhost are made with
trustme at start; the CA is written to DIR/ca.pem for the client to trust
explicitly. Each accepted message is parsed with Python's email package (a parser
nobody on the team wrote) and written as DIR/<listener>/<n>.json with the envelope,
the AUTH login, whether TLS was on, the headers and each text part, and the raw
message. A message whose subject contains "[tempfail]" is refused once with 451,
one whose subject contains "[permfail]" always with 554.
DIR/ready is written when every listener accepts connections.

  python scripts/interop-smtp-server.py DIR BASE_PORT USER PASSWORD_FILE

Ports: BASE_PORT (plain), +1 (auth), +2 (starttls), +3 (smtps). Stops on SIGTERM.
"""

import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import threading

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Capture:
    def __init__(self, directory, listener):
        self.directory = os.path.join(directory, listener)
        self.listener = listener
        self.count = 0
        self.lock = threading.Lock()
        self.deferred = set()
        os.makedirs(self.directory, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = {}
        for part in message.walk():
            if part.get_content_maintype() == "text":
                parts[part.get_content_type()] = part.get_content()
        login = getattr(session, "seatwarden_login", None)
        subject = str(message["subject"])
        # A subject with "[tempfail]" is refused once with a 4xx, as a busy relay
        # does, so tests can check that only an accepted message is marked sent.
        if "[permfail]" in subject:
            return "554 5.7.1 message refused by policy"
        if "[tempfail]" in subject and subject not in self.deferred:
            self.deferred.add(subject)
            return "451 4.3.0 try again later"
        record = {
            "listener": self.listener,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "subject": subject,
            "from": str(message["from"]),
            "to": [str(a) for a in message.get_all("to", [])],
            "message_id": str(message["message-id"]),
            "content_type": message.get_content_type(),
            "parts": parts,
            "raw": raw.decode("utf-8", "replace"),
        }
        with self.lock:
            self.count += 1
            path = os.path.join(self.directory, f"{self.count:04}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        if ok:
            session.seatwarden_login = user
        return AuthResult(success=ok, handled=False)

    return check


def main():
    directory, base_port, user, password_file = sys.argv[1:5]
    base_port = int(base_port)
    with open(password_file) as f:
        password = f.read().strip()
    os.makedirs(directory, exist_ok=True)

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    auth = authenticator(user, password)
    controllers = [
        Controller(Capture(directory, "plain"), hostname="127.0.0.1", port=base_port),
        Controller(
            Capture(directory, "auth"),
            hostname="127.0.0.1",
            port=base_port + 1,
            authenticator=auth,
            auth_required=True,
            auth_require_tls=False,
        ),
        Controller(
            Capture(directory, "starttls"),
            hostname="127.0.0.1",
            port=base_port + 2,
            tls_context=context,
            require_starttls=True,
            authenticator=auth,
            auth_required=True,
        ),
        Controller(
            Capture(directory, "smtps"),
            hostname="127.0.0.1",
            port=base_port + 3,
            ssl_context=context,
            server_hostname="127.0.0.1",
            authenticator=auth,
            auth_required=True,
            # The connection is TLS from the first byte, but aiosmtpd only counts
            # STARTTLS as TLS when deciding whether to offer AUTH.
            auth_require_tls=False,
        ),
    ]
    for controller in controllers:
        controller.start()
    with open(os.path.join(directory, "ready"), "w") as f:
        f.write("ready\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for controller in controllers:
        controller.stop()


if __name__ == "__main__":
    main()
