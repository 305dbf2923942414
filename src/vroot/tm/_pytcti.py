"""`SocketTcti`: a tpm2-pytss TCTI that speaks raw TPM 2.0 frames over a connected socket.

The socket is a swtpm data channel: one attached through the control socket (CMD_SET_DATAFD, see
`vroot.tm._datachannel`), or a connection to swtpm's `--server` socket. `TmClient.open(tcti)` and
`tpm2_pytss.ESAPI(tcti)` take it like a TCTI string.

Every response is read with a bound: the header's size field, at most `max_size` bytes (the
buffer ESYS gives), within `timeout` seconds. After a timeout or a broken frame the channel is out
of step with the TPM and refuses further commands. Errors cross the C boundary of ESYS as
TSS2_TCTI_RC_IO_ERROR (a TSS2 error code cannot carry text); the reason is kept in `.error`, and
`SwtpmProcess.data_channel()` adds it to the exception that leaves its `with` block.
"""

from __future__ import annotations

import select
import socket
import time

from tpm2_pytss.constants import TSS2_RC
from tpm2_pytss.TCTI import PollData, PyTCTI
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from vroot.errors import SwtpmError
from vroot.tm._datachannel import read_response

__all__ = ["SocketTcti"]

_MAX_COMMAND = 4096  # TPM2_MAX_COMMAND_SIZE; swtpm's buffer is no larger


class SocketTcti(PyTCTI):
    """TPM 2.0 command/response frames over `sock`, which this object owns (see `close`)."""

    def __init__(
        self, sock: socket.socket, *, timeout: float = 60.0, name: str = "swtpm", max_size: int = 4096
    ):
        super().__init__(max_size=max_size, magic=b"VROOTDC\x00")
        self._sock: socket.socket | None = sock
        self._timeout = timeout
        self._name = name
        self._pending = False
        self.error: str | None = None

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("broken" if self.error else "open")
        return f"SocketTcti({self._name}, {state})"

    def _fail(self, message: str, cause: BaseException | None = None) -> TSS2_Exception:
        self.error = f"data channel to {self._name}: {message}"
        exc = TSS2_Exception(TSS2_RC.TCTI_RC_IO_ERROR)
        exc.add_note(self.error)
        if cause is not None:
            exc.__cause__ = cause
        return exc

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise self._fail("closed")
        if self.error is not None:
            raise TSS2_Exception(TSS2_RC.TCTI_RC_IO_ERROR)
        return self._sock

    def do_transmit(self, command: bytes) -> None:
        s = self._live()
        if self._pending:
            raise TSS2_Exception(TSS2_RC.TCTI_RC_BAD_SEQUENCE)
        if not 10 <= len(command) <= _MAX_COMMAND:
            raise TSS2_Exception(TSS2_RC.TCTI_RC_BAD_VALUE)
        try:
            s.settimeout(self._timeout)
            s.sendall(command)
        except OSError as exc:
            raise self._fail(f"send failed: {exc}", exc) from exc
        self._pending = True

    def do_receive(self, timeout: int) -> bytes:
        s = self._live()
        if not self._pending:
            raise TSS2_Exception(TSS2_RC.TCTI_RC_BAD_SEQUENCE)
        if 0 <= timeout < self._timeout * 1000:
            # A caller polling with a short timeout: nothing there yet means "try again".
            ready, _, _ = select.select([s], [], [], timeout / 1000)
            if not ready:
                raise TSS2_Exception(TSS2_RC.TCTI_RC_TRY_AGAIN)
        try:
            resp = read_response(s, max_size=self._max_size, deadline=time.monotonic() + self._timeout)
        except TimeoutError as exc:
            raise self._fail(f"no complete response within {self._timeout:g} s", exc) from exc
        except (OSError, SwtpmError) as exc:
            raise self._fail(str(exc), exc) from exc
        self._pending = False
        return resp

    def do_get_poll_handles(self) -> tuple[PollData, ...]:
        return (PollData(self._live().fileno(), select.POLLIN),)

    def do_set_locality(self, locality: int) -> None:
        # Raw frames carry no locality; swtpm sets it through its control channel (not done here).
        raise TSS2_Exception(TSS2_RC.TCTI_RC_NOT_IMPLEMENTED)

    def do_finalize(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket: for an attached data channel, this detaches it from swtpm."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
