"""Turn a driver exception into one line saying what happened and one saying what to do.

redis-py, SQLAlchemy (psycopg, psycopg2, PyMySQL, sqlite3), kombu and amqp
each word the same failures differently; this module recognises the common
ones by exception type and message, so that every check reports
"connection refused" or "authentication failed" the same way.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Explanation:
    """What went wrong (``message``), how to fix it (``fix``) and its kind (``reason``)."""

    reason: str
    message: str
    fix: str


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        nested = getattr(current, "orig", None)
        if isinstance(nested, BaseException) and nested not in seen:
            seen.append(nested)
        current = current.__cause__ or current.__context__
    return seen


def _text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # SQLAlchemy appends a background link and the SQL; keep the driver's words.
    text = text.split("\n(Background on this error")[0]
    return " ".join(text.split())


def _has(chain: list[BaseException], *needles: str) -> bool:
    haystack = " ".join(_text(e).lower() for e in chain)
    names = " ".join(type(e).__name__.lower() for e in chain)
    return any(n in haystack or n in names for n in needles)


def _errno(chain: list[BaseException], *numbers: int) -> bool:
    return any(isinstance(e, OSError) and e.errno in numbers for e in chain)


def explain(exc: BaseException, where: str, timeout_s: float | None = None) -> Explanation:
    """Explain *exc*, raised while talking to *where* (a masked URL or host)."""
    chain = _chain(exc)
    detail = _text(chain[-1] if len(chain) > 1 else exc)
    if _has(
        chain,
        "access denied",
        "authentication failed",
        "wrongpass",
        "noauth",
        "invalid username-password",
        "access_refused",
        "accessrefused",
        "authenticationerror",
        "password authentication",
        "invalid password",
    ):
        return Explanation(
            "auth",
            f"authentication failed at {where}: {detail}",
            "check the user name and password in the URL (or the app's settings); "
            "resultkit never prints the password",
        )
    if _has(chain, "masternotfounderror"):
        found = next(e for e in chain if type(e).__name__ == "MasterNotFoundError")
        return Explanation(
            "sentinel",
            f"no Sentinel at {where} gave a master's address ({_text(found).split(' : ')[0]})",
            "check that the Sentinels answer and watch this master (SENTINEL MASTERS), and the "
            "master name (result_backend_transport_options = {'master_name': ...}, or "
            "?master_name= on the URL for resultkit)",
        )
    if _has(chain, 'role "'):
        return Explanation(
            "role",
            f"the database user does not exist at {where}: {detail}",
            "create the user (CREATE ROLE ... LOGIN PASSWORD ...) or correct the user in the URL",
        )
    if _has(chain, "unknown database") or (
        _has(chain, "does not exist") and _has(chain, 'database "')
    ):
        return Explanation(
            "database",
            f"the database does not exist at {where}: {detail}",
            "create it (CREATE DATABASE name) or correct the database name at the end of the URL",
        )
    if _has(chain, "vhost", "notallowed"):
        return Explanation(
            "vhost",
            f"the broker refused the virtual host at {where}: {detail}",
            "create the vhost (rabbitmqctl add_vhost NAME; rabbitmqctl set_permissions) "
            "or correct the vhost at the end of the broker URL",
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or _has(
        chain, "ssl", "certificate", "tls", "wrong version number"
    ):
        return Explanation(
            "tls",
            f"TLS handshake failed with {where}: {detail}",
            "for rediss:// set ssl_cert_reqs=required and ssl_ca_certs=/path/to/ca.pem in the "
            "URL (or redis_backend_use_ssl); if the server does not speak TLS, use redis://",
        )
    refused = any(isinstance(e, ConnectionRefusedError) for e in chain) or _has(
        chain, "connection refused", "error 111", "errno 111", "(2003"
    )
    if refused and not _has(chain, "name or service", "nodename"):
        return Explanation(
            "refused",
            f"connection refused by {where}: nothing is listening there",
            "start the server, or correct the host and port in the URL",
        )
    if any(isinstance(e, socket.gaierror) for e in chain) or _has(
        chain,
        "name or service not known",
        "nodename nor servname",
        "could not translate host",
        "temporary failure in name resolution",
        "no address associated",
        "getaddrinfo",
    ):
        return Explanation(
            "dns",
            f"cannot resolve the host name of {where}",
            "correct the host name in the URL, or check DNS / /etc/hosts on this machine",
        )
    if any(isinstance(e, (TimeoutError, socket.timeout)) for e in chain) or _has(
        chain, "timed out", "timeout"
    ):
        wait = f" within {timeout_s:.1f} s" if timeout_s else ""
        return Explanation(
            "timeout",
            f"no answer from {where}{wait}",
            "check that the host is reachable (firewall, security group, VPN) "
            + ("or allow more time with --timeout" if timeout_s else "and not overloaded"),
        )
    if _has(chain, "noperm", "permission denied", "command denied", "insufficientprivilege") or (
        _has(chain, "readonly database") or _errno(chain, errno.EACCES, errno.EPERM, errno.EROFS)
    ):
        return Explanation(
            "permission",
            f"permission denied at {where}: {detail}",
            "use a user that may write there (GRANT INSERT, UPDATE, DELETE on the result "
            "tables; a Redis ACL with +@write; write access to the folder), or point the "
            "command at a copy it may change",
        )
    if _has(chain, "oom command not allowed", "no space left", "disk full", "is full") or (
        _errno(chain, errno.ENOSPC, errno.EDQUOT)
    ):
        return Explanation(
            "full",
            f"no space left at {where}: {detail}",
            "free space there (a bigger disk, a higher Redis maxmemory, resultkit cleanup), "
            "or write somewhere else",
        )
    if _has(chain, "readonly you can't write", "read only replica"):
        return Explanation(
            "replica",
            f"{where} is a read-only replica: {detail}",
            "point the URL at the master, or use sentinel:// so the master is found",
        )
    if _has(chain, "unable to open database file", "read-only"):
        return Explanation(
            "file",
            f"cannot open the SQLite database at {where}: {detail}",
            "make sure the folder exists and this user may write to it",
        )
    if _errno(chain, errno.ENOENT, errno.ENOTDIR):
        return Explanation(
            "missing",
            f"{where} does not exist: {detail}",
            "create the folder, or correct the path",
        )
    return Explanation(
        "error",
        f"{type(chain[-1]).__name__} from {where}: {detail}",
        "read the message above; run with a URL the server accepts "
        "(resultkit doctor URL) to narrow it down",
    )
