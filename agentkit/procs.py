"""Process identity as (pid, start time), so a recycled pid is never mistaken for the process we meant."""



def start_time(pid: int) -> float | None:
    """When `pid` started (clock ticks since boot on Linux, read from /proc; psutil's create_time elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return float(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, after the parenthesised name
    except FileNotFoundError:
        return None
    except OSError:
        pass
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(pid: int | None, started: float | None) -> bool:
    """True if the process that had `pid` when it started at `started` still runs (and is not a zombie)."""
    if not pid:
        return False
    now = start_time(pid)
    if now is None or started is None or now != started:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:][:1] != b"Z"
    except OSError:
        return True
