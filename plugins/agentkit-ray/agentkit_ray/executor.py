"""RayExecutor: submit, poll and kill agentkit jobs as Ray jobs. Everything runs on the machine that holds the
state DB and talks to the cluster's Jobs API over HTTP; nothing of agentkit needs to be installed on the nodes."""

import fnmatch
import json
import math
import os
import re
import shlex
import signal
import time
import urllib.request
from pathlib import Path

from agentkit import durations
from agentkit.errors import AgentkitError
from agentkit.jobs import job_env, prepare_worktree

_clients: dict = {}
AGENT_WAIT_S = 30  # how long a submit retries while the cluster says its job agent is not up yet
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray's own lines in a job's log: its logger's, and the line naming the entrypoint
RAY_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ \S+\.py:\d+ -- "
                      r"|Running entrypoint for job agentkit-\d+-")


def address(repo) -> str:
    found = repo.config["executors.ray.address"] or os.environ.get("RAY_ADDRESS", "")
    if not found:
        raise AgentkitError("no Ray cluster address", "set executors.ray.address (the dashboard URL, "
                                                      "http://HEAD:8265) or RAY_ADDRESS")
    return found if "://" in found or found == "auto" else f"http://{found}"


def client(addr: str):
    """A Jobs API client for `addr`, made once per process; an unreachable cluster or another Ray version is an
    AgentkitError naming the address."""
    if addr not in _clients:
        import ray
        from ray.job_submission import JobSubmissionClient

        try:
            made = JobSubmissionClient(addr)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise AgentkitError(f"cannot reach the Ray cluster at {addr}: {exc}",
                                "start it (`ray start --head`) or fix executors.ray.address") from None
        check_version(made.get_address(), ray.__version__)
        _clients[addr] = made
    return _clients[addr]


def cluster_version(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/version", timeout=10) as answer:
        return json.loads(answer.read())


def check_version(url: str, ours: str) -> None:
    theirs = cluster_version(url).get("ray_version")
    if theirs != ours:
        raise AgentkitError(f"Ray version mismatch: this machine has ray {ours}, the cluster at {url} runs {theirs}",
                            f"install ray=={theirs} here (pip install 'ray[default]=={theirs}')")


def _resources(repo) -> dict:
    out = {}
    for item in repo.config["executors.ray.resources"]:
        name, _, amount = item.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise AgentkitError(f"config executors.ray.resources item {item!r} is not NAME=AMOUNT",
                                'write it like "GPU=1"') from None
    return out


def travelling_env(repo, job: dict) -> dict:
    """The job's environment minus what only makes sense on this machine (config executors.ray.env_exclude)."""
    patterns = repo.config["executors.ray.env_exclude"]
    env = {k: v for k, v in job_env(repo, job).items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    env["RAY_JOB_STOP_WAIT_TIME_S"] = str(max(1, math.ceil(job["grace_s"] or 0)))  # the kill's grace, per job
    return env


def entrypoint(repo, job: dict) -> str:
    """The shell line a node runs. shared: in the worktree's path (shared storage). git: in a fresh clone of the
    job's branch, pushed back when the command ends."""
    command = shlex.join(job["command"])
    if repo.config["executors.ray.mode"] != "git":
        return f"cd {shlex.quote(job['cwd'])} && exec {command}"
    url, branch = repo.config["executors.ray.git_url"], job.get("branch")
    if not url or not branch:
        raise AgentkitError("executors.ray.mode = git needs executors.ray.git_url and a job in a worktree",
                            "set executors.ray.git_url, and spawn with --worktree")
    u, b = shlex.quote(url), shlex.quote(branch)
    return (f'd=$(mktemp -d) && git clone -q --branch {b} {u} "$d/w" && cd "$d/w" || exit 1; {command}; rc=$?; '
            f'git push -q origin HEAD:refs/heads/{b} || rc=${{rc:-1}}; cd / && rm -rf "$d"; exit $rc')


def _branch(repo, job: dict) -> str | None:
    if not job.get("worktree"):
        return None
    from agentkit import worktrees

    row = worktrees.find(repo, job["worktree"])
    return row["branch"] if row else None


def _push(repo, job: dict) -> None:
    """git mode: the worktree's branch goes to the shared remote first, so the node clones what is here."""
    import subprocess

    url = repo.config["executors.ray.git_url"]
    done = subprocess.run(["git", "push", "-q", "--force", url, f"HEAD:refs/heads/{job['branch']}"],
                          cwd=job["cwd"], capture_output=True, text=True)
    if done.returncode:
        raise AgentkitError(f"cannot push {job['branch']} to {url}: {done.stderr.strip()}")


def _fetch_back(repo, job: dict) -> None:
    """git mode: what the node pushed comes back into the worktree (fast-forward only; never loses work)."""
    import subprocess

    if repo.config["executors.ray.mode"] == "git" and job.get("cwd"):
        subprocess.run(["git", "pull", "-q", "--ff-only", repo.config["executors.ray.git_url"],
                        _branch(repo, job) or "HEAD"], cwd=job["cwd"], capture_output=True)


class _Unreachable:
    """Since when a cluster could not be reached (a file per address, so every process sees the same clock)."""

    @staticmethod
    def path(repo, addr: str) -> Path:
        return repo.paths.agents / "jobs" / "runners" / "ray" / (addr.replace("/", "_").replace(":", "_") + ".down")

    @classmethod
    def since(cls, repo, addr: str) -> float:
        path = cls.path(repo, addr)
        try:
            return float(path.read_text())
        except (OSError, ValueError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(time.time()))
            return time.time()

    @classmethod
    def clear(cls, repo, addr: str) -> None:
        cls.path(repo, addr).unlink(missing_ok=True)


def _new_log(job: dict, text: str, ended: bool) -> str:
    """What of Ray's log for the job is not in the job's log file yet: Ray's own lines left out (they may land
    anywhere: Ray flushes its 'Running entrypoint' line late), and while it runs only whole lines."""
    if not ended:
        text = text[:text.rfind("\n") + 1]
    kept = "".join(line for line in text.splitlines(keepends=True) if not RAY_LINE.match(line))
    data = kept.encode()
    try:
        have = os.path.getsize(job["log_path"])
    except OSError:
        have = 0
    return data[have:].decode(errors="replace")


class RayExecutor:
    enforces_timeout = False  # agentkit's poll kills a job past its timeout, counted from when Ray ran it

    def submit(self, repo, job: dict) -> dict:
        addr = address(repo)
        ray_client = client(addr)
        if job.get("worktree_auto") and not job.get("worktree"):
            job = prepare_worktree(repo, job)
        job = {**job, "branch": _branch(repo, job)}
        if repo.config["executors.ray.mode"] == "git":
            _push(repo, job)
        options = {"entrypoint_num_cpus": repo.config["executors.ray.num_cpus"] or None,
                   "entrypoint_resources": _resources(repo) or None}
        submission = f"agentkit-{job['job_id']}-{job['token'][:12]}"
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                ray_client.submit_job(entrypoint=entrypoint(repo, job), submission_id=submission,
                                      runtime_env={"env_vars": travelling_env(repo, job)},
                                      metadata={"agentkit_job": str(job["job_id"]), "agentkit_repo": str(repo.root)},
                                      **{k: v for k, v in options.items() if v is not None})
                break
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if "try again later" in str(exc) and time.monotonic() < deadline:  # a node's agent is starting
                    time.sleep(0.5)
                    continue
                raise AgentkitError(f"the Ray cluster at {addr} refused the job: {exc}") from None
        return {"address": addr, "submission_id": submission}

    def poll(self, repo, job: dict) -> dict:
        handle = job["handle"] or {}
        addr, submission = handle.get("address"), handle.get("submission_id")
        if not submission:
            return {"state": "lost", "reason": "it has no Ray submission id"}
        try:
            ray_client = client(addr)
            info = ray_client.get_job_info(submission)
            logs = ray_client.get_job_logs(submission)
        except AgentkitError as exc:
            return self._unreachable(repo, addr, exc.message)
        except ConnectionError as exc:
            return self._unreachable(repo, addr, str(exc))
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return {"state": "lost", "reason": f"its Ray job {submission} vanished from the cluster at {addr}"}
            return self._unreachable(repo, addr, str(exc))
        _Unreachable.clear(repo, addr)
        status = str(getattr(info.status, "value", info.status))
        log = _new_log(job, logs or "", status in ENDED)
        if status not in ENDED:
            report = {"state": "running", "log": log}
            if status == "RUNNING":
                report["started_at"] = time.time()  # first seen running: the timeout counts from here
            return report
        _fetch_back(repo, job)
        code = info.driver_exit_code
        end = {"log": log, "exit_code": code, "signal": None, "reason": None}
        if status == "SUCCEEDED":
            return {"state": "succeeded", **end, "exit_code": 0}
        if status == "STOPPED":
            return {"state": "killed", **end, "signal": int(signal.SIGTERM), "reason": "stopped on the Ray cluster"}
        if code is not None and code < 0:  # the command itself died of a signal
            return {"state": "failed", **end, "exit_code": None, "signal": -code, "reason": f"killed by signal {-code}"}
        if code is None:  # the supervisor or its node died: Ray says why
            first = (info.message or "").strip().splitlines()
            return {"state": "failed", **end, "reason": f"Ray: {first[0] if first else info.error_type}"}
        return {"state": "failed", **end, "reason": f"exited with {code}"}

    def _unreachable(self, repo, addr: str, why: str) -> dict:
        down = time.time() - _Unreachable.since(repo, addr)
        limit = durations.parse(repo.config["executors.ray.lost_after"], "config executors.ray.lost_after") or 60
        if down >= limit:
            return {"state": "lost", "reason": f"the Ray cluster at {addr} was unreachable for {down:.0f}s: {why}"}
        return {"state": "running"}

    def kill(self, repo, job: dict, grace: float) -> int | None:
        """Ray stops the job's process tree on its node: TERM, the job's grace (RAY_JOB_STOP_WAIT_TIME_S, set per
        job at submit), then KILL. Waits until Ray reports it ended."""
        handle = job["handle"] or {}
        if not handle.get("submission_id"):
            return 0
        try:
            ray_client = client(handle["address"])
            ray_client.stop_job(handle["submission_id"])
            deadline = time.monotonic() + max(grace, job.get("grace_s") or 0) + 15
            while time.monotonic() < deadline:
                if str(getattr(s := ray_client.get_job_status(handle["submission_id"]), "value", s)) in ENDED:
                    break
                time.sleep(0.1)
        except (AgentkitError, ConnectionError, RuntimeError):
            return None  # unreachable or gone: nothing more can be done from here
        return None

    def health(self, repo) -> dict:
        """The cluster's nodes and CPUs, for `jobs health` (never raises)."""
        try:
            addr = address(repo)
            url = client(addr).get_address()
            with urllib.request.urlopen(f"{url}/api/cluster_status", timeout=10) as answer:
                data = json.loads(answer.read())["data"]["clusterStatus"]
        except (AgentkitError, OSError, ValueError, KeyError) as exc:
            return {"reachable": False, "error": getattr(exc, "message", None) or str(exc)}
        report = data.get("loadMetricsReport") or {}
        used, total = (report.get("usage") or {}).get("CPU", [0.0, 0.0])
        nodes = (data.get("autoscalerReport") or {}).get("activeNodes") or {}
        return {"reachable": True, "address": url, "nodes": sum(nodes.values()) if nodes else None,
                "cpus_total": total, "cpus_free": round(total - used, 3)}
