"""An SMTP server for the email-alert tests (aiosmtpd, installed by scripts/test-services.sh).

usage: smtp_receiver.py PORT DIR MODE CERT KEY USER PASSWORD
MODE: "starttls" (STARTTLS required before MAIL and AUTH) or "tls" (TLS from the first byte).
Logins other than USER/PASSWORD are refused with 535. Each message lands in DIR as N.eml, with
N.json holding the login, the envelope sender and recipients, whether TLS carried it, and the
message parsed: its From/To/Subject headers, its plain-text body and its attachments by name.
Prints "ready" once it listens on 127.0.0.1:PORT.
"""

import asyncio
import email
import email.policy
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, mode, cert, key, user, password = sys.argv[1:8]
port = int(port)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def login_of(auth_data):
    if isinstance(auth_data, LoginPassword):
        return auth_data.login.decode()
    return None


class Store:
    count = 0

    async def handle_DATA(self, server, session, envelope):
        Store.count += 1
        base = os.path.join(out, str(Store.count))
        message = email.message_from_bytes(
            envelope.original_content, policy=email.policy.default
        )
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json.tmp", "w") as f:
            json.dump(
                {
                    "login": login_of(session.auth_data),
                    "mail_from": envelope.mail_from,
                    "rcpt_to": envelope.rcpt_tos,
                    "tls": session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                    "from": message["From"],
                    "to": message["To"],
                    "subject": message["Subject"],
                    "text": message.get_body(("plain",)).get_content(),
                    "attachments": {
                        part.get_filename(): part.get_content().decode()
                        if isinstance(part.get_content(), bytes)
                        else part.get_content()
                        for part in message.iter_attachments()
                    },
                },
                f,
            )
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK"


os.makedirs(out, exist_ok=True)
options = dict(authenticator=authenticator, auth_required=True)
if mode == "starttls":
    controller = Controller(
        Store(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        **options,
    )
else:
    # aiosmtpd counts only STARTTLS as TLS for AUTH; here every byte is TLS already.
    controller = Controller(
        Store(),
        hostname="127.0.0.1",
        port=port,
        ssl_context=context,
        auth_require_tls=False,
        **options,
    )
controller.start()
print("ready", flush=True)
try:
    asyncio.run(asyncio.Event().wait())
finally:
    controller.stop()
