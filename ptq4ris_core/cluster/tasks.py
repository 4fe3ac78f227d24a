"""Independent tasks run in this process or on a Ray cluster, resumable through their result files.

A task is a picklable function, its arguments and the JSON file its result goes to. A task whose file
exists is not run again (a finished table cell is not recomputed). On Ray (``address``: "local" starts one
on this machine, else "HOST:PORT" of a running cluster), a worker that dies is retried ``retries`` times;
a task that raises (a bad input) is reported once and not retried. The run returns every result it has
and names the tasks that are missing.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..errors import InputError


@dataclass
class Task:
    key: str            # a short name for people (a cell, a bag)
    fn: Callable        # module-level, so Ray can ship it
    args: tuple
    out: Path           # the result, as JSON; its presence means done
    settings: dict = field(default_factory=dict)  # what the result depends on: a file made otherwise is refused


@dataclass
class Outcome:
    results: dict = field(default_factory=dict)   # key → result, in the tasks' order
    failed: dict = field(default_factory=dict)    # key → why
    resumed: list = field(default_factory=list)   # keys whose result was already on disk

    @property
    def missing(self) -> list[str]:
        return list(self.failed)


def _write_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_one(fn: Callable, args: tuple, out: str, settings: dict, threads: int | None = None):
    """Run a task and write its result with its settings (a worker's side). ``threads``: the math
    libraries' threads in this worker."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    result = fn(*args)
    _write_atomic(Path(out), {"settings": settings, "result": result})
    return result


def load_done(t: Task):
    """The finished result of ``t``, or None; a result made with other settings is refused by name."""
    if not t.out.exists():
        return None
    got = json.loads(t.out.read_text(encoding="utf-8"))
    theirs = json.loads(json.dumps(got.get("settings")))
    ours = json.loads(json.dumps(t.settings))
    if theirs != ours:
        differs = sorted(k for k in set(theirs or {}) | set(ours) if (theirs or {}).get(k) != ours.get(k))
        raise InputError(f"{t.out} holds {t.key} made with other settings ({', '.join(differs)} differ); choose "
                         f"another folder, or delete that file to compute it again")
    return got["result"]


@contextmanager
def folder_lock(folder: Path):
    """One run per output folder: a second one is refused by name (finished results stay where they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".run.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = lock.read_text(encoding="utf-8").strip() if lock.exists() else "?"
        if pid.isdigit() and _alive(int(pid)):
            raise InputError(f"another run (pid {pid}) is writing into {folder}; wait for it or choose another "
                             f"folder (its finished results are kept and will be reused)") from None
        lock.unlink(missing_ok=True)  # a run that died left it
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_address(address: str, timeout: float = 5.0) -> None:
    """A Ray address that cannot be reached is an error within seconds, not a hang."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address!r}: give HOST:PORT of a Ray cluster's head (e.g. 10.0.0.5:6379), or "
                         f"'local' to start one on this machine")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"no Ray cluster answers at {address} ({e}); start one with 'ray start --head' on the "
                         f"head machine, or use --ray local") from None


def check_ray(address: str | None) -> None:
    """Nothing to check for a run here (None) or a Ray started here ("local"); else the cluster must answer."""
    if address not in (None, "local"):
        check_address(address)


def run_tasks(tasks: list[Task], ray_address: str | None = None, workers: int | None = None, threads: int = 1,
              retries: int = 3, progress: bool = True, on_result: Callable | None = None) -> Outcome:
    """Run the tasks not yet done: here, one after another (``ray_address`` None), or on Ray."""
    done = Outcome()
    todo = []
    for t in tasks:
        got = load_done(t)
        if got is not None:
            done.results[t.key] = got
            done.resumed.append(t.key)
        else:
            todo.append(t)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="tasks", unit="task", disable=not progress,
               dynamic_ncols=True)
    if ray_address is None:
        for t in todo:
            try:
                done.results[t.key] = run_one(t.fn, t.args, str(t.out), t.settings)
            except Exception as e:  # reported as on Ray: the other tasks still run
                traceback.print_exc()
                done.failed[t.key] = f"{type(e).__name__}: {e}"
            else:
                if on_result:
                    on_result(t.key, done.results[t.key])
            bar.update()
    else:
        _run_on_ray(todo, ray_address, workers, threads, retries, done, bar, on_result)
    bar.close()
    done.results = {t.key: done.results[t.key] for t in tasks if t.key in done.results}
    return done


def connect_ray(address: str, workers: int | None = None, threads: int = 1) -> bool:
    """Start Ray here ("local") or join the cluster at HOST:PORT, unless Ray is already up in this process.
    True when this call started it (the caller shuts it down). A cluster that does not answer is an
    InputError (Ray gives up after about 20 s where something else listens at the address)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray on this machine and on the cluster's: pip install 'ptq4ris-core[cluster]' "
                         "(or run without --ray, here, one task after another)") from None
    check_ray(address)
    if ray.is_initialized():
        return False
    kw = {"address": None if address == "local" else address, "include_dashboard": False,
          "log_to_driver": False, "configure_logging": False}
    if address == "local":
        kw["num_cpus"] = workers or os.cpu_count()
    # the package must be importable on every worker: ship its folder's parent on the path
    root = str(Path(__file__).resolve().parents[2])
    kw["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
                                      "OMP_NUM_THREADS": str(threads)}}
    try:
        ray.init(**kw)
    except ConnectionError as e:
        raise InputError(f"no Ray cluster answers at {address} ({e}); start one with 'ray start --head' on the "
                         f"head machine, or use --ray local") from None
    return True


def _run_on_ray(todo, address, workers, threads, retries, done: Outcome, bar, on_result) -> None:
    started_here = connect_ray(address, workers, threads)  # Ray missing or unreachable: a clear InputError
    import ray
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(run_one)
        pending = {remote.remote(t.fn, t.args, str(t.out), t.settings, threads): t for t in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(ready[0])
            try:
                done.results[t.key] = ray.get(ready[0])
                if on_result:
                    on_result(t.key, done.results[t.key])
            except ray.exceptions.RayTaskError as e:  # the task itself raised: a bad input, not retried
                done.failed[t.key] = f"{type(e.cause).__name__}: {e.cause}"
            except ray.exceptions.RayError as e:  # workers died more often than the retries allow
                done.failed[t.key] = f"{type(e).__name__} after {retries} retries: {str(e).splitlines()[0]}"
            bar.update()
    finally:
        if started_here:
            ray.shutdown()
