"""The `ray` executor: agentkit jobs run as Ray jobs (Jobs API) on a cluster; agentkit keeps the limit, the FIFO
queue and the job records, and learns each job's outcome from `poll` alone."""

from agentkit.hookspecs import hookimpl

NAME = "ray"
# machine-local variables a job's environment does not carry to another machine (fnmatch patterns)
LOCAL_ENV = ["PATH", "HOME", "PWD", "OLDPWD", "SHELL", "USER", "LOGNAME", "HOSTNAME", "TMPDIR", "TERM", "DISPLAY",
             "SHLVL", "_", "SSH_*", "XDG_*", "VIRTUAL_ENV", "LD_*", "RAY_*", "PYTHONHOME"]
KEYS = {
    "executors.ray.address": "",  # the cluster's dashboard (Jobs API) URL, e.g. http://head:8265; "" = RAY_ADDRESS
    "executors.ray.num_cpus": 1.0,  # entrypoint_num_cpus: what one job reserves on its node
    "executors.ray.resources": [],  # entrypoint_resources as NAME=AMOUNT (e.g. "GPU=1", "agents=1")
    "executors.ray.mode": "shared",  # shared: the worktree's path on shared storage; git: the node clones
    "executors.ray.git_url": "",  # git mode: the URL nodes clone the job's branch from and push it back to
    "executors.ray.env_exclude": LOCAL_ENV,  # variables of the spawner's environment left behind
    "executors.ray.lost_after": "60s",  # a job whose cluster cannot be reached this long is recorded lost
}


@hookimpl
def config_keys() -> dict:
    return KEYS


@hookimpl
def register_executors(register) -> None:
    from agentkit_ray.executor import RayExecutor

    register(NAME, RayExecutor())
