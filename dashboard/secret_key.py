"""``python -m dashboard.secret_key``: generate SECRET_KEY once into SECRET_KEY_FILE.

``make run`` runs it before anything else; importing the settings never writes the file.
Not a management command: Django cannot start without a key (the checkpoints app derives
its signing key from it when it is ready), so this reads the settings module directly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure(path: Path) -> bool:
    """Write a new random key to ``path`` (mode 0600) unless it exists; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    return True


def main() -> None:
    from dashboard import settings

    if settings.SECRET_KEY:
        print("SECRET_KEY is set; nothing to do.")
    elif ensure(settings.SECRET_KEY_FILE):
        print(f"Wrote a new SECRET_KEY to {settings.SECRET_KEY_FILE} (mode 0600).")
    else:
        print(f"{settings.SECRET_KEY_FILE} exists but is empty: delete it or set SECRET_KEY.")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
