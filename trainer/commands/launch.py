"""``python -m trainer.launch processes=N [training overrides ...]``: one multi-process JAX job on this machine.

For trying a multi-host job where there is one host: it starts N ``python -m trainer``
processes with ``runtime=jax`` joined over a free 127.0.0.1 port
(``runtime.coordinator``, ``runtime.num_processes``, ``runtime.process_id``), prefixes
every line they print with ``[i]``, stops the others when one fails, forwards SIGTERM
and SIGINT to all of them, and exits with the worst exit code (a failure's over an
interruption's over 0). On a real cluster each host starts its one process itself
(docs/runtime.md, "Several hosts"); nothing there depends on this launcher.

    python -m trainer.launch processes=2 runtime.logical_devices=4 head=partial_fc debug=smoke
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

USAGE = ("usage: python -m trainer.launch processes=N [training overrides ...]\n"
         "  starts N `python -m trainer runtime=jax` processes joined on a free 127.0.0.1 port")

from trainer.registry import ConfigError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def split_arguments(argv: list[str]) -> tuple[int, list[str]]:
    """(processes, the training overrides); a mistake is a one-line ValueError."""
    count, rest = None, []
    for argument in argv:
        if argument.startswith("processes="):
            value = argument.partition("=")[2]
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"processes={value}: give a whole number >= 1")
            count = int(value)
        elif argument.split("=", 1)[0].lstrip("+~") in ("runtime.coordinator", "runtime.num_processes",
                                                         "runtime.process_id"):
            raise ValueError(f"{argument}: the launcher sets the coordinator, num_processes and process_id")
        else:
            rest.append(argument)
    if count is None:
        raise ValueError("processes=N is missing")
    return count, rest


def process_command(overrides: list[str], count: int, process_id: int, port: int) -> list[str]:
    runtime = [] if any(a.startswith("runtime=") for a in overrides) else ["runtime=jax"]
    return [sys.executable, "-m", "trainer", *runtime, *overrides, f"runtime.coordinator=127.0.0.1:{port}",
            f"runtime.num_processes={count}", f"runtime.process_id={process_id}"]


def worst(codes: list[int]) -> int:
    """A failure's code over an interruption's (130, 143) over success."""
    failures = [c for c in codes if c not in (0, 130, 143)]
    if failures:
        return max(failures)
    return max(codes, default=0)


def relay(index: int, stream, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"[{index}] {line}")
            sys.stdout.flush()


def launch(count: int, overrides: list[str]) -> int:
    port = free_port()
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    children = [subprocess.Popen(process_command(overrides, count, i, port), env=environment, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
                for i in range(count)]
    lock = threading.Lock()
    relays = [threading.Thread(target=relay, args=(i, child.stdout, lock), daemon=True)
              for i, child in enumerate(children)]
    for thread in relays:
        thread.start()

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes: list[int | None] = [None] * count
        while None in codes:
            for i, child in enumerate(children):
                if codes[i] is None:
                    try:
                        codes[i] = child.wait(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        continue
                    if codes[i] not in (0, 130, 143):  # a failure: the others would wait for it forever
                        for other in children:
                            if other.poll() is None:
                                other.terminate()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for thread in relays:
        thread.join(timeout=5)
    return worst([int(c) for c in codes])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and argv[0] in ("--version", "-V"):
        from trainer.commands.command_config import version_text

        print(version_text())
        return 0
    try:
        count, overrides = split_arguments(argv)
    except ValueError as mistake:  # one line, as every command's mistakes are
        print(f"error: {mistake} (usage: python -m trainer.launch processes=N [training overrides ...])",
              file=sys.stderr)
        return 2
    try:  # the training config's mistakes once, here, rather than once per started process
        from trainer.config import compose

        compose(process_command(overrides, count, 0, 1)[3:])
    except ConfigError as mistake:
        print(f"error: {mistake}", file=sys.stderr)
        return 2
    return launch(count, overrides)


if __name__ == "__main__":
    sys.exit(main())
