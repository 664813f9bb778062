"""Ways to restart Redis with more databases: the managed server, or a configured command."""

import os
import re
import subprocess
from pathlib import Path

from agentkit import redis as redis_mod
from agentkit.errors import AgentkitError, usage
from agentkit.hookspecs import hookimpl


def restart_managed(repo, databases: int) -> None:
    redis_mod.restart_managed(repo, databases)


def set_databases_line(conf_text: str, databases: int) -> str:
    line = f"databases {databases}"
    if re.search(r"(?m)^\s*databases\s+\d+\s*$", conf_text):
        return re.sub(r"(?m)^\s*databases\s+\d+\s*$", line, conf_text)
    return conf_text.rstrip("\n") + ("\n" if conf_text.strip() else "") + line + "\n"


def restart_command(repo, databases: int) -> None:
    conf, command = repo.config["redis.conf_path"], repo.config["redis.restart_command"]
    if not conf or not command:
        raise usage("the `command` provisioner needs redis.conf_path and redis.restart_command",
                    "set both in .agents/config.toml, e.g. restart_command = \"sudo systemctl restart redis\"")
    from agentkit.state.files import atomic_write

    path = Path(conf)
    old = path.stat() if path.exists() else None
    text = path.read_text() if old else ""
    atomic_write(path, set_databases_line(text, databases), mode=old.st_mode & 0o7777 if old else 0o644)
    if old:
        try:  # a system file (e.g. /etc/redis/redis.conf) keeps its owner when we may set it
            os.chown(path, old.st_uid, old.st_gid)
        except PermissionError:
            pass
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=repo.root)
    if done.returncode != 0:
        raise AgentkitError(f"redis.restart_command failed with exit {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip()[-500:]}",
                            f"{path} now says databases {databases}; fix the command and rerun provisioning")
    redis_mod.wait_ready(repo.config["redis.url"], timeout=30)


@hookimpl
def register_provisioners(register) -> None:
    register("managed", restart_managed)
    register("command", restart_command)
