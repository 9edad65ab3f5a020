"""Where the runs of a grid execute: one after another in this process, or as tasks on Ray.

A grid (``resattn compare``, a study) is a list of :class:`Job`\\ s. An executor runs the jobs
that have no ``result.json`` yet and yields ``(job, result)`` as each one ends, finished ones
from an earlier call first (logged as skipped), so running the same list again finishes what is
missing. ``result`` is the run's ``result.json`` as a dict, ``{"status": "failed", "error": ...,
"log": ...}`` for a run that raised (the grid goes on; the traceback is in the run's ``log``), or
``{}`` when a run ended without a result. A run that failed on its data, options or files (a
``ValueError``, ``OSError``, a ``RuntimeError`` from torch, ...) is a failed run; any other
exception (``TypeError``, ``KeyError``, ``AttributeError``, ...) is a defect in resattn and its
result also says ``"defect": True``, so that the caller reports it as one rather than as a
failed run.

* :class:`SequentialExecutor` (the default, no extra packages): one run after another in this
  process. Each data set is loaded once and shared; each run shows its epoch progress bars.
* :class:`ProcessExecutor` (stdlib ``concurrent.futures``): ``workers`` runs at a time on this
  machine, each in its own spawned process with ``threads`` torch threads (default: the CPU
  count divided by ``workers``). Each worker loads a data set once and keeps it for its next runs;
  each run writes ``train.log`` and ``attempts.jsonl`` as under Ray. With ``device='cuda'`` in
  the runs' configs the workers share the GPU (several small runs per GPU).
* :class:`RayExecutor` (``pip install 'resattn[ray]'``): every run is a Ray task
  (https://docs.ray.io/en/latest/ray-core/tasks.html) with ``cpus_per_run`` CPUs and
  ``gpus_per_run`` GPUs. The driver loads the data set once and puts it in Ray's object store.
  **Workers write into the output folder** (metrics, checkpoint after every epoch, result), the
  same files a sequential run writes, so a cluster needs the output folder on a file system that
  every node and the driver share (NFS, Lustre, a ReadWriteMany volume). Why: a worker that dies
  is retried by Ray (``max_retries``) and its retry must find the last checkpoint, wherever it is
  scheduled; a folder on the shared file system is the one place that survives the node. Each run
  also gets ``train.log`` (its console output, tracebacks, one header line per attempt) and
  ``attempts.jsonl`` (host, pid, time and resumed epoch of each attempt). One grid-level tqdm
  bar counts runs done / running / failed. Ctrl-C cancels the tasks (finished runs and every
  checkpoint stay).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from .data import DataBundle, load_dataset
from .train import TrainConfig, train

__all__ = ["DataSpec", "Job", "Executor", "SequentialExecutor", "ProcessExecutor", "RayExecutor",
           "ReportOnlyExecutor", "EXECUTORS",
           "read_result", "make_executor"]

#: Executor names accepted by :func:`make_executor` and ``--executor``.
EXECUTORS = ("sequential", "processes", "ray")

RAY_EXTRA_HINT = "pip install 'resattn[ray]'"


@dataclass(frozen=True)
class DataSpec:
    """What :func:`resattn.workflow.data.load_dataset` needs to load a grid's data (jobs with equal
    specs share one loaded copy)."""

    dataset: str
    data_dir: Optional[str] = None
    download: bool = False
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> "DataSpec":
        """The data a run's config names (what ``train`` loads when given no bundle)."""
        return cls(config.dataset, config.data_dir, config.download, config.train_subset,
                   config.test_subset)

    def load(self) -> DataBundle:
        """Raises: :class:`resattn.workflow.data.DataNotFoundError` when the files are missing."""
        return load_dataset(self.dataset, self.data_dir, download=self.download,
                            train_subset=self.train_subset, test_subset=self.test_subset)


@dataclass
class Job:
    """One run of a grid: its name, its training config, its folder and its data."""

    run_id: str
    config: TrainConfig
    run_dir: Path
    data: DataSpec
    resume: bool = True  #: continue from the run's checkpoint.pt (False: start over)


def read_result(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The run's ``result.json`` as a dict, or None when the run has not ended."""
    path = Path(run_dir) / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


#: Exceptions a run meets from its data, options, files or device: a failed run, not a defect.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError,
                                                     ImportError, MemoryError)


def is_defect(e: BaseException) -> bool:
    """True when ``e`` is not one of :data:`EXPECTED_ERRORS`: a bug in resattn (or in the
    ``train_fn`` given to the executor), not a property of the run."""
    return not isinstance(e, EXPECTED_ERRORS)


def _failed(e: BaseException, log_path: Optional[Path] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    if log_path is not None:
        out["log"] = str(log_path)
    if is_defect(e):
        out["defect"] = True
    return out


def _write_error_log(run_dir: Path, e: BaseException) -> Optional[Path]:
    """Append the traceback of ``e`` to ``run_dir/error.log``; the path (None when the folder
    cannot be written)."""
    path = Path(run_dir) / "error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    except OSError:
        return None
    return path


def _failure_line(job: Job, result: dict[str, Any]) -> str:
    where = f" (traceback: {result['log']})" if result.get("log") else ""
    if result.get("defect"):
        return (f"{job.run_id}: DEFECT in resattn, please report it: {result['error']}{where}")
    return f"{job.run_id}: failed: {result['error']}{where}"


def _summary(result: dict[str, Any]) -> str:
    return (f"{result['status']}: best {result.get('best_acc') or 0:.2f}%  final "
            f"{result.get('final_acc') or 0:.2f}%  {result.get('images_per_s') or 0:.0f} img/s")


TrainFn = Callable[..., Any]


class Executor:
    """Runs a list of jobs; see the module docstring. Subclasses implement :meth:`_run`."""

    name = "executor"

    def run(self, jobs: Sequence[Job], *, progress: bool = True, log: Callable[[str], None] = print
            ) -> Iterator[tuple[Job, dict[str, Any]]]:
        """Yield ``(job, result)`` for every job: those finished earlier at once, the others
        as they end (in any order). Close the iterator (``contextlib.closing``) when leaving
        early, so that running tasks are stopped.

        Raises:
            resattn.workflow.data.DataNotFoundError: the data set is missing (before any run starts).
            KeyboardInterrupt: Ctrl-C; finished runs and checkpoints stay on disk.
        """
        todo = []
        for i, job in enumerate(jobs, 1):
            result = read_result(job.run_dir)
            if result is not None:
                log(f"[{i}/{len(jobs)}] {job.run_id}: {result['status']} earlier, skipped")
                yield job, result
            else:
                todo.append((i, job))
        if todo:
            yield from self._run(todo, len(jobs), progress, log)

    def _run(self, todo: list[tuple[int, Job]], total: int, progress: bool,
             log: Callable[[str], None]) -> Iterator[tuple[Job, dict[str, Any]]]:
        raise NotImplementedError


class SequentialExecutor(Executor):
    """One run after another in this process (the default).

    Args:
        train_fn: the training function, called as ``train_fn(config, run_dir, bundle=...,
            resume=True, progress=...)`` (default :func:`resattn.workflow.train.train`).
    """

    name = "sequential"

    def __init__(self, train_fn: Optional[TrainFn] = None) -> None:
        self.train_fn = train_fn or train

    def _run(self, todo, total, progress, log):
        bundles: dict[DataSpec, DataBundle] = {}  # each data set loaded once, shared by its runs
        for i, job in todo:
            if job.data not in bundles:  # outside the try: missing data stops the grid
                bundles[job.data] = job.data.load()
            resuming = (Path(job.run_dir) / "checkpoint.pt").exists()
            log(f"[{i}/{total}] {job.run_id}: {'resuming' if resuming else 'training'}")
            try:
                self.train_fn(job.config, job.run_dir, bundle=bundles[job.data],
                              resume=job.resume, progress=progress)
                result = read_result(job.run_dir)
            except Exception as e:  # keep going; finished runs and checkpoints stay on disk
                result = _failed(e, _write_error_log(job.run_dir, e))
                log(f"    {_failure_line(job, result)}")
            else:
                if result is not None:
                    log(f"    {_summary(result)}")
            yield job, result or {}


class ReportOnlyExecutor(Executor):
    """Trains nothing: finished runs are read as usual, every other run is reported ``missing``
    (``resattn study --report-only``: reports from the runs a cache holds, e.g. one brought back
    from a GPU machine before the whole grid finished)."""

    name = "report-only"

    def _run(self, todo, total, progress, log):
        for i, job in todo:
            log(f"[{i}/{total}] {job.run_id}: not run (report only)")
            yield job, {"status": "missing", "error": "not run (--report-only)"}


# ----------------------------------------------------------------------------- processes

_WORKER_BUNDLES: dict[DataSpec, DataBundle] = {}  # per worker process: data sets loaded so far


def _process_job(job: Job, train_fn: TrainFn, threads: int) -> dict[str, Any]:
    """The body of one worker-process run: load (once per worker) the data, then :func:`_run_job`."""
    try:
        if job.data not in _WORKER_BUNDLES:
            _WORKER_BUNDLES[job.data] = job.data.load()
    except Exception as e:
        return _failed(e)
    return _run_job(job, _WORKER_BUNDLES[job.data], train_fn, threads)


class ProcessExecutor(Executor):
    """``workers`` runs at a time, each in a spawned worker process (``concurrent.futures``).

    Args:
        workers: processes (>= 1).
        threads: torch threads per run; default ``max(1, os.cpu_count() // workers)``.
        train_fn: as in :class:`SequentialExecutor`; must be importable (picklable) for the workers.

    Raises:
        ValueError: ``workers`` or ``threads`` not an integer >= 1.
    """

    name = "processes"

    def __init__(self, workers: int = 2, *, threads: Optional[int] = None,
                 train_fn: Optional[TrainFn] = None) -> None:
        for arg, v in (("workers", workers), ("threads", threads)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{arg}={v!r} must be an integer >= 1")
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.train_fn = train_fn or train

    def _run(self, todo, total, progress, log):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        todo[0][1].data.load()  # here, before any worker starts: missing data stops the grid
        log(f"processes: {len(todo)} runs on {self.workers} worker processes, {self.threads} "
            f"thread(s) each; logs in each run's train.log")
        done = total - len(todo)
        # spawn, not fork: CUDA cannot be used in a forked child of a process that initialised it
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures = {pool.submit(_process_job, job, self.train_fn, self.threads): (i, job)
                   for i, job in todo}
        ended = False
        try:
            for fut in as_completed(futures):
                i, job = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    result = _failed(e)
                done += 1
                log(f"[{done}/{total}] {job.run_id}: " + (
                    f"failed: {result['error']} (see {job.run_dir}/train.log)"
                    if result.get("status") == "failed" else
                    _summary(result) if result else "ended without a result"))
                yield job, result
            ended = True
        finally:
            # Ctrl-C, a time limit or an early close: stop the workers now (every run resumes
            # from its last epoch checkpoint when the same grid runs again)
            pool.shutdown(wait=ended, cancel_futures=True)
            if not ended:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()


# ----------------------------------------------------------------------------- Ray

def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _checkpoint_epoch(path: Path) -> Optional[int]:
    """Epochs done in the checkpoint at ``path`` (None when there is none or it is unreadable;
    ``train`` then says why)."""
    if not path.is_file():
        return None
    try:
        from ..tools.weights import read_checkpoint
        return int(read_checkpoint(path)["epoch"])
    except Exception:
        return None


def _run_job(job: Job, bundle: Optional[DataBundle], train_fn: TrainFn, threads: int
             ) -> dict[str, Any]:
    """The body of one Ray task: train ``job`` in ``job.run_dir`` (resuming from its checkpoint
    after a worker died), its output in ``train.log``. Returns the result dict."""
    run_dir = Path(job.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        resume_epoch = _checkpoint_epoch(run_dir / "checkpoint.pt")
        attempt = {"attempt": _count_lines(run_dir / "attempts.jsonl") + 1,
                   "host": socket.gethostname(), "pid": os.getpid(),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume_epoch": resume_epoch}
        with (run_dir / "attempts.jsonl").open("a") as f:
            f.write(json.dumps(attempt) + "\n")
        import torch
        torch.set_num_threads(threads)
        with (run_dir / "train.log").open("a", buffering=1) as logf, \
                contextlib.redirect_stdout(logf), contextlib.redirect_stderr(logf):
            print(f"--- {job.run_id}: attempt {attempt['attempt']} on {attempt['host']} pid "
                  f"{attempt['pid']} at {attempt['time']}, {threads} thread(s): "
                  + (f"resuming after epoch {resume_epoch} (checkpoint.pt)" if resume_epoch
                     else "training"))
            try:
                train_fn(job.config, run_dir, bundle=bundle, resume=True, progress=False)
            except Exception as e:
                traceback.print_exc()
                print(f"--- {job.run_id}: failed")
                return _failed(e, run_dir / "train.log")
            result = read_result(run_dir)
            print(f"--- {job.run_id}: {_summary(result) if result else 'ended without a result'}")
        return result or {}
    except Exception as e:  # the run folder itself is unusable
        return _failed(e)


_RAY_HOW_TO = ("Start a cluster with `ray start --head` on its head node (it prints the address "
               "to pass; --address auto on that machine), check host, port and firewall, or leave "
               "--address out to start a local Ray here")


def _check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connection to ``HOST:PORT`` (or ``ray://HOST:PORT``) within ``timeout_s``; other
    forms (``auto``, ``local``) are left to Ray.

    Raises:
        ConnectionError: nothing answers there in time (names the address and the time).
    """
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=timeout_s):
            pass
    except OSError as e:
        raise ConnectionError(f"ray: nothing answers at {address!r} within {timeout_s:g} s "
                              f"({type(e).__name__}: {e}). {_RAY_HOW_TO}") from e


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"executor='ray' needs Ray, an optional extra of resattn: "
                          f"{RAY_EXTRA_HINT} (or pip install 'ray[default]')") from e
    return ray


class RayExecutor(Executor):
    """Every job a Ray task; see the module docstring for what is written where.

    Args:
        address: the Ray cluster: None starts a local Ray on this machine (or joins the one in
            ``RAY_ADDRESS``), ``"auto"`` joins the cluster running here (``ray start``),
            ``"HOST:PORT"`` the cluster with that head, ``"ray://HOST:PORT"`` connects through
            Ray Client. When Ray is already initialised in this process, that session is used
            and left running; a session this executor started is shut down at the end.
        cpus_per_run: CPUs each run reserves (> 0; torch uses ``max(1, int(cpus_per_run))``
            threads unless ``threads`` says otherwise).
        gpus_per_run: GPUs each run reserves, in [0, 1] (0.5: two runs share a GPU). None: 1
            when the cluster has GPUs, else 0. One run on several GPUs is torchrun's job
            (``resattn train`` under ``torchrun``), not the grid's.
        max_retries: how often Ray reruns a task whose worker died (the run resumes from its
            last checkpoint). A run that raises is not retried: it is recorded as failed.
        train_fn: as in :class:`SequentialExecutor`; must be importable on the workers.
        connect_timeout_s: how long to wait for a ``HOST:PORT`` or ``ray://HOST:PORT`` address
            to answer before giving up with a :class:`ConnectionError` that names the address
            and how to start or reach Ray (Ray itself would keep retrying for minutes).

    Raises:
        ImportError: Ray is not installed; the message names the extra ``resattn[ray]``.
        ValueError: a bad number, naming the argument.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, *, cpus_per_run: float = 1.0,
                 gpus_per_run: Optional[float] = None, max_retries: int = 3,
                 train_fn: Optional[TrainFn] = None, connect_timeout_s: float = 10.0,
                 threads: Optional[int] = None) -> None:
        if not (isinstance(cpus_per_run, (int, float)) and cpus_per_run > 0):
            raise ValueError(f"cpus_per_run={cpus_per_run!r} must be a number > 0")
        if gpus_per_run is not None and not (isinstance(gpus_per_run, (int, float))
                                             and 0 <= gpus_per_run <= 1):
            raise ValueError(f"gpus_per_run={gpus_per_run!r} must be in [0, 1] (a fraction "
                             "shares a GPU between runs); one run on several GPUs: torchrun")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
        self.ray = _import_ray()
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries
        self.train_fn = train_fn or train
        self.connect_timeout_s = connect_timeout_s
        self.threads = threads

    def _connect(self) -> bool:
        """Initialise Ray unless it is; True when this call started the session.

        Raises:
            ConnectionError: the address does not answer within ``connect_timeout_s``, or Ray
                refuses to connect; the message names the address and how to start Ray.
        """
        ray = self.ray
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            _check_reachable(address, self.connect_timeout_s)
            try:
                ray.init(address=address)
            except (ConnectionError, RuntimeError, TimeoutError) as e:
                raise ConnectionError(f"ray: cannot connect to {address!r} ({e}). "
                                      f"{_RAY_HOW_TO}") from e
        else:  # a fresh local Ray, without the dashboard (start one with `ray start --head`)
            ray.init(address="local", include_dashboard=False)
        return True

    def _run(self, todo, total, progress, log):
        ray = self.ray
        started_here = self._connect()
        refs: dict[Any, tuple[int, Job]] = {}
        try:
            resources = ray.cluster_resources()
            gpus = self.gpus_per_run
            if gpus is None:
                gpus = 1 if resources.get("GPU", 0) >= 1 else 0
            log(f"ray: {len(todo)} runs as tasks on {resources.get('CPU', 0):g} CPUs, "
                f"{resources.get('GPU', 0):g} GPUs ({self.cpus_per_run:g} CPU, {gpus:g} GPU per "
                f"run); logs in each run's train.log")
            if resources.get("CPU", 0) < self.cpus_per_run or resources.get("GPU", 0) < gpus:
                log(f"ray: warning: the cluster has less than one run asks for ({self.cpus_per_run:g} "
                    f"CPU, {gpus:g} GPU); the runs wait until it grows (see --cpus-per-run, "
                    "--gpus-per-run)")
            bundles: dict[DataSpec, Any] = {}
            for _, job in todo:  # on the driver, as in a sequential run: missing data stops here
                if job.data not in bundles:
                    bundles[job.data] = ray.put(job.data.load())
            task = ray.remote(_run_job)
            threads = self.threads or max(1, int(self.cpus_per_run))
            attempts_before = {}
            for i, job in todo:
                if not job.resume:  # start over; a retry after a dead worker still resumes
                    (Path(job.run_dir) / "checkpoint.pt").unlink(missing_ok=True)
                attempts_before[job.run_id] = _count_lines(Path(job.run_dir) / "attempts.jsonl")
                ref = task.options(name=f"resattn:{job.run_id}", num_cpus=self.cpus_per_run,
                                   num_gpus=gpus, max_retries=self.max_retries,
                                   retry_exceptions=False).remote(
                    job, bundles[job.data], self.train_fn, threads)
                refs[ref] = (i, job)
            yield from self._collect(refs, attempts_before, total, total - len(todo), progress, log)
        finally:
            for ref in refs:  # Ctrl-C or an early close: stop what still runs
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()

    def _collect(self, refs, attempts_before, total, done_before, progress, log):
        ray = self.ray
        from tqdm.auto import tqdm
        done, failed = done_before, 0
        bar = tqdm(total=total, initial=done_before, desc="grid", unit="run", dynamic_ncols=True,
                   disable=not (progress and sys.stderr.isatty()))  # frames only on a terminal

        def say(msg: str) -> None:
            with tqdm.external_write_mode():
                log(msg)

        def show() -> None:
            running = sum(_count_lines(Path(job.run_dir) / "attempts.jsonl")
                          > attempts_before[job.run_id] for _, job in refs.values())
            bar.set_postfix_str(f"done {done}, running {running}, failed {failed}")

        try:
            show()
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in ready:
                    i, job = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:  # retries used up, cancelled, ...
                        result = _failed(e)
                    if result.get("status") not in (None, "failed") and read_result(job.run_dir) is None:
                        result = {"status": "failed", "error":
                                  f"the worker finished {job.run_id} but {job.run_dir}/result.json "
                                  "is not visible here: the output folder must be on a file "
                                  "system shared by the driver and every node"}
                    if result.get("status") == "failed":
                        failed += 1
                        result.setdefault("log", str(Path(job.run_dir) / "train.log"))
                        say(f"[{i}/{total}] {_failure_line(job, result)}")
                    else:
                        done += 1
                        say(f"[{i}/{total}] {job.run_id}: "
                            f"{_summary(result) if result else 'ended without a result'}")
                    bar.update(1)
                    yield job, result
                show()
        finally:
            bar.close()


def make_executor(name: str = "sequential", *, address: Optional[str] = None,
                  cpus_per_run: Optional[float] = None, gpus_per_run: Optional[float] = None,
                  workers: Optional[int] = None, threads: Optional[int] = None) -> Executor:
    """An executor by name (``sequential`` | ``processes`` | ``ray``), with its options checked.
    ``threads``: torch threads of each Ray task (default ``max(1, int(cpus_per_run))``); a
    sequential grid runs on this process's threads (``torch.set_num_threads``).

    Raises:
        ValueError: an unknown name, or options given to an executor they do not apply to.
        ImportError: ``ray`` without Ray installed (names the extra ``resattn[ray]``).
    """
    if name not in EXECUTORS:
        raise ValueError(f"executor={name!r} is not allowed; allowed: {', '.join(EXECUTORS)}")
    ray_given = [n for n, v in (("address", address), ("gpus_per_run", gpus_per_run))
                 if v is not None]
    if name != "processes" and workers is not None:
        raise ValueError("workers only applies to executor='processes' (--executor processes)")
    if name == "processes":
        if ray_given:
            raise ValueError(f"{', '.join(ray_given)} only apply to executor='ray' (--executor ray)")
        if cpus_per_run is not None:
            if not (isinstance(cpus_per_run, (int, float)) and cpus_per_run >= 1):
                raise ValueError(f"cpus_per_run={cpus_per_run!r} must be a number >= 1")
            threads = int(cpus_per_run)
        return ProcessExecutor(2 if workers is None else workers, threads=threads)
    if name == "sequential":
        given = ray_given + (["cpus_per_run"] if cpus_per_run is not None else [])
        if given:
            raise ValueError(f"{', '.join(given)} only apply to executor='ray' "
                             "(--executor ray)")
        return SequentialExecutor()
    return RayExecutor(address, cpus_per_run=1.0 if cpus_per_run is None else cpus_per_run,
                       gpus_per_run=gpus_per_run, threads=threads)
