"""The built-in notifier: runs config `run.notify_cmd` with each notification as JSON on stdin."""

import json
import shlex
import subprocess

from agentkit.hookspecs import hookimpl


@hookimpl
def notify(event: dict, config) -> None:
    cmd = config["run.notify_cmd"]
    if cmd:
        subprocess.run(shlex.split(cmd), input=json.dumps(event), text=True, timeout=30, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
