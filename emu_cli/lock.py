"""One owner per output folder: a run holds a lock file in its folder while it writes there.

A second run on the same folder is refused, naming the owner (its command, pid, host and start).
A lock whose process is gone (killed, crashed, the machine rebooted) is stale: the next run on
the same host takes it over and says so. A lock from another host cannot be checked from here,
so the message names the file to remove once that run is known to be over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from emu_cli.errors import EmuError

log = logging.getLogger("emu")
LOCK_NAME = ".emu.lock"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _is_main_process() -> bool:
    """Under torchrun or ``accelerate launch`` every process runs the command; the first holds
    the lock for all of them."""
    return int(os.environ.get("RANK", "0")) == 0


class FolderLock:
    """``with FolderLock(out, "emu pretrain"):`` holds ``out`` for the block; ``name`` is the lock
    file's (a folder replaced as a whole is locked by a file beside it)."""

    def __init__(self, folder: Path, command: str | None = None, name: str = LOCK_NAME) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.command = command or " ".join(["emu", *sys.argv[1:3]]).strip()
        self.held = False
        self.made_folder = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if not _is_main_process():
            return
        self.made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # once more after removing a stale lock
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear()
                continue
            owner = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with os.fdopen(descriptor, "w") as handle:
                json.dump(owner, handle)
            self.held = True
            return
        raise EmuError(f"'{self.folder}': could not take its lock {self.path}; try again")

    def _refuse_or_clear(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            # being written this instant, or not ours to read: a running owner all the same
            time.sleep(0.2)
            if self.path.exists() and time.time() - self.path.stat().st_mtime < 5:
                raise EmuError(
                    f"'{self.folder}' is in use by another run (lock {self.path}); wait for it, "
                    "or choose another output folder"
                ) from None
            owner, pid, host = {}, -1, socket.gethostname()
        described = (
            f"{owner.get('command', 'a run')} (pid {pid} on {host}, since "
            f"{owner.get('started', 'an unknown time')})"
        )
        if host != socket.gethostname():
            raise EmuError(
                f"'{self.folder}' is in use by {described}; if that run is over, remove "
                f"{self.path}, or choose another output folder"
            )
        if pid > 0 and process_alive(pid):
            raise EmuError(
                f"'{self.folder}' is in use by {described}; wait for it to finish, or choose "
                "another output folder"
            )
        log.info(
            f"'{self.folder}': taking over the lock of {described}, which is no longer running"
        )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the folder up; one this lock made and nothing was written to goes too."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            if self.made_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
