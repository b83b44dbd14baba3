"""First-run secrets: generated once, kept in the data folder, never logged."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

WEBHOOK_SECRET_FILE = "webhook-secret"  # noqa: S105 - a file name
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name


@dataclass(frozen=True)
class StoredSecret:
    value: str
    generated: bool
    path: Path


def stored_secret(data_dir: Path, name: str) -> StoredSecret:
    """The secret kept in ``data_dir/name``, generated (mode 0600) when absent."""
    path = data_dir / name
    if path.exists():
        return StoredSecret(path.read_text().strip(), generated=False, path=path)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # beside the secrets: owner-only
    value = secrets.token_urlsafe(32)
    tmp = data_dir / f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    # link() is atomic and fails if the name exists: processes starting at once
    # agree on the first complete file.
    try:
        os.link(tmp, path)
    except FileExistsError:
        return StoredSecret(path.read_text().strip(), generated=False, path=path)
    finally:
        tmp.unlink()
    return StoredSecret(value, generated=True, path=path)
