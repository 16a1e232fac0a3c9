"""A signal handler in the embedding program (SIGCHLD in a runtime) must not turn a call that
would have succeeded into an exception: interrupted calls are asked again, as Python's own os
functions do (PEP 475). Shown with a real signal arriving during a real blocking call:
openat2 of a FIFO blocks until a writer opens it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from mountcompat import open_in_root


def test_openat2_interrupted_by_a_signal_is_asked_again(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    handled: list[float] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(time.time()))
    main = threading.get_ident()

    def interrupt_then_write() -> None:
        time.sleep(0.3)  # the main thread is blocked in openat2 by now
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(0.3)
        with open(fifo, "wb") as writer:
            writer.write(b"through the fifo")

    helper = threading.Thread(target=interrupt_then_write)
    helper.start()
    try:
        started = time.time()
        fd = open_in_root(tmp_path, "fifo", os.O_RDONLY, force="openat2")
        try:
            assert os.read(fd, 100) == b"through the fifo"
        finally:
            os.close(fd)
    finally:
        # Should the call have failed, the writer still waits for a reader: give it one.
        unblock = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        helper.join()
        os.close(unblock)
        signal.signal(signal.SIGUSR1, previous)
    # The signal came while the call was blocked, and its handler ran.
    assert len(handled) == 1 and started < handled[0] < time.time()
