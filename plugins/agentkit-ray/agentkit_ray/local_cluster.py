"""A throwaway Ray cluster on this machine: a head on 127.0.0.1 and worker nodes beside it, on free high ports,
usage stats off, in a temp dir of its own, stopped with `stop()`. For tests, benches and trying the plugin out
(`python -m agentkit_ray.local_cluster` prints the address and stops the cluster on Enter)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class LocalCluster:
    address: str  # the dashboard (Jobs API) URL
    gcs: str  # the head's GCS address, for `ray start --address`
    temp_dir: Path
    env: dict = field(default_factory=dict)

    def processes(self) -> list:
        """This cluster's processes (their command lines name its temp dir), and what they started."""
        import psutil

        found = set()
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.temp_dir) in part for part in proc.info["cmdline"] or ()):
                found.add(proc)
                try:
                    found.update(proc.children(recursive=True))
                except psutil.Error:
                    pass
        return list(found)

    def stop(self) -> None:
        """TERM every process of this cluster, then KILL what is left; other Ray clusters are left alone (unlike
        `ray stop`, which stops every one on the machine)."""
        from agentkit import procs

        for _ in range(3):  # again: a process may start while the others are stopped (a head still coming up)
            found = self.processes()
            if not found:
                break
            procs.terminate(found, 10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def node_ids(self) -> list[str]:
        from ray.util.state import list_nodes

        return [n.node_id for n in list_nodes(address=self.address) if n.state == "ALIVE"]


def _takes_jobs(address: str) -> bool:
    """Does the Jobs API take a job yet? (It answers 'No available agent' for a while after the nodes join.)"""
    from ray.job_submission import JobSubmissionClient

    try:
        JobSubmissionClient(address).submit_job(entrypoint="true")
        return True
    except (ConnectionError, RuntimeError):
        return False


def start(head_cpus: int = 2, worker_cpus: list[int] | tuple = (2,), timeout: float = 120) -> LocalCluster:
    # a short temp root: Ray's unix sockets live under it and must stay below 108 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="akray", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]

    def own_ports() -> list[str]:  # a node's agents on free ports: two nodes (or clusters) never share Ray's defaults
        return [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
    subprocess.run([_ray(), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", "--include-dashboard=true", f"--num-cpus={head_cpus}", *common,
                    *own_ports()],
                   env=env, check=True, capture_output=True, timeout=timeout)
    cluster = LocalCluster(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", temp_dir, env)
    try:
        for cpus in worker_cpus:
            subprocess.run([_ray(), "start", f"--address={cluster.gcs}", f"--num-cpus={cpus}", *common[:2],
                            *own_ports()],
                           env=env, check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:  # the Jobs API answers, and every node has joined
            try:
                urllib.request.urlopen(f"{cluster.address}/api/version", timeout=5).read()
                if len(cluster.node_ids()) == 1 + len(worker_cpus) and _takes_jobs(cluster.address):
                    return cluster
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Ray cluster at {cluster.address} did not come up")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise


if __name__ == "__main__":
    made = start()
    print(made.address, flush=True)
    try:
        input("Enter stops the cluster\n")
    finally:
        made.stop()
