"""The warm fork server: ``python -m greenbench.point.server PARENT_PID``, one per local sweep.

It imports torch, Lightning, CodeCarbon and greenbench once, never touching CUDA or running a
torch operation (forking after either is unsafe), and then forks every point of the sweep: each
point is still a fresh process with its own accelerator context, log and exit status, without
seconds of imports each time. NVML is not safe across a fork either, and CodeCarbon's import
opens an NVML session (``pynvml.nvmlInit()`` at module level): ``warm_up`` closes every session
the imports opened, so each point's GPU meter opens its own. It talks to the parent over its
standard input and output, one JSON line each way:

    parent -> server   {"handoff": "/path", "environment": {"TMPDIR": ...}}   fork a point
    server -> parent   {"ready": true, "nvml_sessions_closed": N}   once the imports are done
                       {"started": PID}               for each point forked
                       {"exited": PID, "status": N}   when it ends (N < 0: killed by signal -N)

It ends when its standard input closes (the sweep is done) or its parent dies: the kernel kills
it then, and every point it forked dies with it in turn (``child.die_with_parent``).
"""

from __future__ import annotations

import json
import os
import select
import sys

from greenbench.point.child import die_with_parent, forked, name_process

POLL_S = 0.1


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m greenbench.point.server PARENT_PID", file=sys.stderr)
        return 2
    die_with_parent(int(argv[0]), watch=False)
    closed = warm_up()
    _say({"ready": True, "nvml_sessions_closed": closed})
    running: set[int] = set()
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], POLL_S)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:  # the parent closed the pipe: the sweep is done
                return 0
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = os.fork()
                if pid == 0:
                    _become_point(json.loads(line))
                running.add(pid)
                _say({"started": pid})
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                _say({"exited": pid, "status": _returncode(status)})


def warm_up() -> int:
    """Import what every point needs, then let go of what must not cross a fork; how many NVML
    sessions the imports had opened (and this closed). Raises if CUDA was initialised."""
    import codecarbon  # noqa: F401  (for the points: imported once here)

    import greenbench.point.run  # noqa: F401  (torch, Lightning, the models and metrics)

    closed = release_nvml()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised while importing; a forked point would inherit it")
    return closed


def release_nvml(limit: int = 64) -> int:
    """``nvmlShutdown()`` as often as NVML was initialised in this process, so that it holds no
    session when it forks (NVML counts initialisations and shuts down at zero); how many it
    closed. pynvml is not imported for this: a process that never imported it has none."""
    pynvml = sys.modules.get("pynvml")
    closed = 0
    while pynvml is not None and getattr(pynvml, "_nvmlLib_refcount", 0) > 0 and closed < limit:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # the library says it holds nothing more
            break
        closed += 1
    return closed


def _become_point(request: dict) -> None:
    """In the forked process: drop the server's pipes, then run the point and exit."""
    name_process()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    code = 1
    try:
        forked(request["handoff"], request["environment"])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # the traceback goes to the point's log; its status says it failed
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
