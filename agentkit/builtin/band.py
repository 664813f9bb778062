"""The elastic band: idle at the floor, grow by a step when full, shrink by a step while the top step is empty."""

from agentkit.band import grid_below
from agentkit.hookspecs import hookimpl


@hookimpl
def band_target(band: dict) -> int:
    floor, step, ceiling = band["floor"], band["step"], band["ceiling"]
    current, occupied = band["current"], set(band["occupied"])
    floor = min(floor, ceiling)
    current = max(floor, min(current, ceiling))
    if band["want"]:
        if all(i in occupied for i in range(current)):
            return min(current + step, ceiling)
        return current
    while current > floor:
        lower = grid_below(current, floor, step)
        if any(i in occupied for i in range(lower, current)):
            break
        current = lower
    return current
