"""A filesystem context (fsopen/fspick): set parameters, create, and mount it detached."""

from __future__ import annotations

import os

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.mounts import DetachedMount, FdOwner, MountAttr


class FsContext(FdOwner):
    """An fs-context fd. After a failed fsconfig the context stays usable (a parameter can be
    probed and another tried), and the kernel's messages come with the OSError."""

    def __init__(self, fd: int, fstype: str) -> None:
        super().__init__(fd)
        self.fstype = fstype

    @classmethod
    def open(cls, fstype: str) -> FsContext:
        return cls(sys_.fsopen(fstype), fstype)

    @classmethod
    def pick(cls, path: str | os.PathLike[str]) -> FsContext:
        """The context of the superblock mounted at ``path``, for reconfiguration."""
        return cls(sys_.fspick(path), "picked")

    def set_flag(self, key: str) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_SET_FLAG, key)

    def set_string(self, key: str, value: str | bytes) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_SET_STRING, key, value)

    def set_fd(self, key: str, fd: int) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_SET_FD, key, None, fd)

    def set_path(self, key: str, path: str | os.PathLike[str], dfd: int = C.AT_FDCWD) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_SET_PATH, key, os.fsencode(path), dfd)

    def set_binary(self, key: str, value: bytes) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_SET_BINARY, key, value, len(value))

    def set_options(self, options: dict[str, str | None]) -> None:
        """``{"key": "value", "flag": None}`` as SET_STRING and SET_FLAG calls, in order."""
        for key, value in options.items():
            if value is None:
                self.set_flag(key)
            else:
                self.set_string(key, value)

    def create(self) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_CMD_CREATE)

    def create_exclusive(self) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_CMD_CREATE_EXCL)

    def reconfigure(self) -> None:
        sys_.fsconfig(self.fileno(), C.FSCONFIG_CMD_RECONFIGURE)

    def messages(self) -> list[str]:
        return sys_.read_context_messages(self.fileno())

    def mount(self, attrs: MountAttr = MountAttr.none()) -> DetachedMount:
        return DetachedMount(sys_.fsmount(self.fileno(), C.FSMOUNT_CLOEXEC, int(attrs)))
