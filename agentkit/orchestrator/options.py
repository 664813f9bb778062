"""The run's options (flags over config `run.*`) and the constants the run's parts share."""

from dataclasses import dataclass, field

from agentkit import durations, integration
from agentkit.errors import ExitCode, usage

SCHEMA_VERSION = 1
CODING_POOL, TESTING_POOL = "run:coding", "run:testing"
KINDS = ("coding", "testing", "init")
INTERRUPTED = int(ExitCode.INTERRUPTED)  # the exit code of a run stopped by Ctrl-C or SIGTERM
LOG_TAIL = 8192  # what a preset's classify reads of an agent's log
WAKE_EVERY_S = 0.005  # how often the loop looks for a commit by another process (PRAGMA data_version)
REFRESH_EVERY_S = 2.0  # how often running jobs' executors are asked whether their runners live
DUMP_EVERY_S = 30.0  # a state dump in the debug log
TAIL_EVERY_S = 0.1  # how often agents' new output lines become `log` events
STOP_GRACE_S = 2.0  # TERM → KILL for the agents of a stopped run
HELPERS = 4  # threads that start agents beside the loop (their git processes overlap)


@dataclass
class Options:
    concurrency: int = 1
    testing_ratio: int = 1
    count_testing: bool = False
    yolo: bool = False
    agent: str = "shell"
    agent_cmd: str = ""
    testing_cmd: str = ""
    init_cmd: str = ""
    spec: str | None = None
    model: str = ""
    max_attempts: int | None = None
    timeout: str = "60m"
    init_timeout: str = "30m"
    into: str | None = integration.DEFAULT
    executor: str | None = None
    max_total: int = 0  # 0: 2 × concurrency
    warnings: list[str] = field(default_factory=list)


def options(repo, **given) -> Options:
    """Flags over config `run.*`: a value given as None falls back to the config."""
    cfg = repo.config
    defaults = {"concurrency": cfg["run.concurrency"], "testing_ratio": cfg["run.testing_ratio"],
                "agent": cfg["run.agent"], "agent_cmd": cfg["run.agent_cmd"], "testing_cmd": cfg["run.testing_cmd"],
                "init_cmd": cfg["run.init_cmd"], "model": cfg["run.model"], "timeout": cfg["run.timeout"],
                "init_timeout": cfg["run.init_timeout"], "into": cfg["run.into"], "max_total": cfg["run.max_total"],
                "max_attempts": None, "executor": None, "spec": None}
    values = {k: (given[k] if given.get(k) is not None else v) for k, v in defaults.items()}
    opts = Options(**values, count_testing=bool(given.get("count_testing")), yolo=bool(given.get("yolo")))
    if opts.into in ("", integration.NONE):
        opts.into = None
    if not 0 <= opts.testing_ratio <= 3:
        raise usage(f"--testing-ratio must be 0 to 3, not {opts.testing_ratio}")
    if opts.concurrency < 1:
        raise usage(f"--concurrency must be at least 1, not {opts.concurrency}")
    if opts.max_attempts is not None and opts.max_attempts < 1:
        raise usage(f"--max-attempts must be at least 1, not {opts.max_attempts}")
    ceiling = cfg["run.max_concurrency"]
    if opts.concurrency > ceiling:
        opts.warnings.append(f"-c {opts.concurrency} is above run.max_concurrency ({ceiling}) for this machine: "
                             f"running {ceiling} coding agents (raise run.max_concurrency to allow more)")
        opts.concurrency = ceiling
    opts.max_total = opts.max_total or 2 * opts.concurrency
    if opts.max_total < opts.concurrency:
        raise usage(f"run.max_total ({opts.max_total}) is below --concurrency ({opts.concurrency})")
    for name in ("timeout", "init_timeout"):
        if getattr(opts, name):
            durations.parse(getattr(opts, name), f"--{name.replace('_', '-')}")
    return opts
