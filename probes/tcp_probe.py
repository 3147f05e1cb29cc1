"""The TCP probe client: what a user's client does against a TCP app, in the client pod as the app user.

    python -m tcp_probe HOST PORT CANARY [--wait-greeting] [--echo-prefix PREFIX]

- tcp-echo: connect, send the canary line `meshproof-canary <canary>\\n` (not the start of an HTTP request), and
  read one line back;
- banner (--wait-greeting): connect and read the greeting BEFORE sending anything, as a MySQL or SMTP client
  does; then the same as tcp-echo.
One deadline (PROBE_DEADLINE_S) covers the whole exchange. It prints one JSON line, its account (`Account`),
and exits with EXIT_CODES[result]:
- "completed": the line came back unchanged (after a greeting, with --wait-greeting);
- "reset": the connection was refused, or closed or reset before that;
- "timeout": the deadline passed while it waited;
- "answered": a line came back that is not the canary's, and the connection stayed open until the deadline
  (a close after such an answer, e.g. an HTTP 400 from a proxy's HTTP codec, is "reset", the answer kept).

Standard library only, and imports nothing of meshproof: cluster/local/runtime.py stages this file as the
top-level module `tcp_probe`, so the app user never reads the checkout.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

# A few seconds, as a user's client waits. Istio's listener filters wait for the client's first bytes with no
# timeout of their own (meshConfig protocolDetectionTimeout, 0s by default), so a server-first app behind them
# hangs until this deadline.
PROBE_DEADLINE_S = 4.0
RESULTS = ("completed", "reset", "timeout", "answered")
EXIT_CODES = {"completed": 0, "reset": 1, "timeout": 2, "answered": 3}
MAX_LINE = 64 * 1024


def canary_line(canary: str) -> bytes:
    return f"meshproof-canary {canary}\n".encode()


class _Closed(Exception):
    """The peer closed or reset the connection."""


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """One line (with its end), or what came before the peer closed; socket.timeout at the deadline."""
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(4096)
        if not chunk:
            raise _Closed(data)
        data += chunk
    return data


def _rest(sock: socket.socket, deadline: float) -> bytes:
    """What else comes until the peer closes (raises _Closed with it) or the deadline (socket.timeout)."""
    data = b""
    while len(data) < MAX_LINE:
        try:
            data += _read_line(sock, deadline)
        except _Closed as closed:
            return data + closed.args[0]
    return data


def probe(host: str, port: int, canary: str, wait_greeting: bool,
          deadline_s: float = PROBE_DEADLINE_S, echo_prefix: str = "") -> dict[str, Any]:
    """The account of one exchange: result, the step it ended at (connect | greeting | echo), greeting and
    answer as received (latin-1 text), detail (an error), elapsed_ms. `echo_prefix`: an echo server that
    answers "<prefix> <line>" (Istio's samples/tcp-echo) completes with exactly that answer."""
    expected = (f"{echo_prefix} " if echo_prefix else "").encode() + canary_line(canary)
    started = time.monotonic()
    deadline = started + deadline_s
    account: dict[str, Any] = {"result": "reset", "step": "connect", "greeting": None, "answer": None,
                               "detail": "", "deadline_s": deadline_s}
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=deadline_s)
        if wait_greeting:
            account["step"] = "greeting"
            account["greeting"] = _read_line(sock, deadline).decode("latin-1")
        account["step"] = "echo"
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(canary_line(canary))
        answer = _read_line(sock, deadline)
        account["answer"] = answer.decode("latin-1")
        account["result"] = "completed" if answer == expected else "answered"
        if account["result"] == "answered":
            # Another answer (a proxy's HTTP 400, say): a close after it is still a closed connection.
            account["answer"] += _rest(sock, deadline).decode("latin-1")
            account["result"], account["detail"] = "reset", "closed by the peer after an answer that is not the echo"
    except _Closed as closed:  # before a whole line came
        got = closed.args[0].decode("latin-1")
        account["detail"] = "closed by the peer" + (f" after {got!r}" if got else "")
        if got and account["step"] == "echo":
            account["answer"] = got
    except TimeoutError:
        if account["result"] != "answered":  # an answer, then silence: the answer stands
            account["result"], account["detail"] = "timeout", f"nothing more within {deadline_s} s"
    except OSError as err:  # refused, reset (also after another answer), unreachable, no such name
        account["result"], account["detail"] = "reset", f"{type(err).__name__}: {err.strerror or err}"
    finally:
        if sock is not None:
            sock.close()
    account["elapsed_ms"] = round((time.monotonic() - started) * 1000, 2)
    return account


def app_arguments(app: str, echo_prefix: str) -> list[str]:
    """The flags for a server app, as both meshes call the client: a banner's client waits for the greeting; a
    tcp-echo's expects the echo server's "<echo_prefix> <line>"."""
    return ["--wait-greeting"] if app == "banner" else ["--echo-prefix", echo_prefix]


def read_account(stdout: str) -> dict[str, Any] | None:
    """The client's account (its one JSON line) from what it printed; None when it printed none."""
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("{")), None)
    try:
        account = json.loads(line) if line else None
    except ValueError:
        return None
    return account if isinstance(account, dict) and "result" in account else None


def main(argv: list[str]) -> int:
    args, prefix = list(argv), ""
    if "--echo-prefix" in args[:-1]:
        at = args.index("--echo-prefix")
        prefix = args[at + 1]
        del args[at:at + 2]
    wait = "--wait-greeting" in args
    args = [a for a in args if a != "--wait-greeting"]
    if len(args) != 3 or not args[1].isdigit():
        print("usage: python -m tcp_probe HOST PORT CANARY [--wait-greeting] [--echo-prefix PREFIX]", file=sys.stderr)
        return 64
    account = probe(args[0], int(args[1]), args[2], wait, echo_prefix=prefix)
    print(json.dumps(account), flush=True)
    return EXIT_CODES[account["result"]]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
