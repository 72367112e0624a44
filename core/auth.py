"""Logins when the server is shared: users with scrypt-hashed passwords in a file under the data root.

`login_required(address)`: the server listens beyond loopback (core.confine.server_is_shared), or
`SLICEWISE_REQUIRE_LOGIN=1`. Users live in `<data root>/.slicewise/users.json`
(`{"users": {"name": "scrypt$n$r$p$salt$hash"}}`, hex salt and hash), written with
`python -m core.auth add NAME` (asks for the password). Passwords are hashed with the standard
library's scrypt (memory-hard, like bcrypt a deliberately slow KDF; no extra package), compared in
constant time; a refused login says only that the name or password is wrong.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path

from core import settings
from core.atomic import atomic_write_text
from core.confine import server_is_shared
from core.errors import SlicewiseError

N, R, P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$00$00"


class AuthError(SlicewiseError):
    """The users file is missing or unreadable, or a user cannot be added."""


def login_required(address: str | None) -> bool:
    if os.environ.get("SLICEWISE_REQUIRE_LOGIN", "").strip().lower() in ("1", "true", "yes"):
        return True
    return server_is_shared(address)


def users_file(data_root: str | Path | None = None) -> Path:
    root = Path(data_root) if data_root is not None else settings.data_root()
    return root / ".slicewise" / "users.json"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def _check(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(bytes.fromhex(digest)) or 32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def load_users(path: str | Path | None = None) -> dict[str, str]:
    path = Path(path) if path is not None else users_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthError(f"{path}: cannot read the users file ({exc})") from exc
    users = data.get("users") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in (users or {}).items()}


def verify(name: str, password: str, path: str | Path | None = None) -> bool:
    """True when `name` exists and `password` matches; the same work is done for unknown names."""
    users = load_users(path)
    stored = users.get(str(name).strip())
    ok = _check(password, stored or _DUMMY)
    return bool(stored) and ok


def add_user(name: str, password: str, path: str | Path | None = None) -> Path:
    name = str(name).strip()
    if not name or any(c in name for c in "\n\r\t") or len(name) > 64:
        raise AuthError(f"invalid user name {name!r}")
    if len(password) < 8:
        raise AuthError("the password must have at least 8 characters")
    path = Path(path) if path is not None else users_file()
    users = load_users(path)
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"users": users}, indent=1))
    os.chmod(path, 0o600)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "add":
        print("usage: python -m core.auth add NAME   (asks for the password; SLICEWISE_DATA picks the root)")
        return 2
    password = getpass.getpass(f"password for {argv[1]}: ")
    if password != getpass.getpass("again: "):
        print("the two passwords differ")
        return 1
    print(f"written {add_user(argv[1], password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
