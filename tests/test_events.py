"""`agentkit events --follow`: the event log streamed as it grows, for scripts and the dashboard."""

import json
import signal
import subprocess
import sys

from tests.conftest import ak


def follow(repo, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentkit.cli", "events", "--follow", *args], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def next_event(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, f"the stream ended: {proc.stderr.read()}"
    return json.loads(line)


def test_follow_streams_new_events_as_json_lines_and_sigterm_ends_it_with_0(repo):
    assert ak("task", "add", "before", cwd=repo).code == 0
    proc = follow(repo, "--json")
    try:
        assert ak("task", "add", "after", cwd=repo).code == 0  # may land before the stream has started: see below
        assert ak("task", "add", "later", "--dep", "1", cwd=repo).code == 0
        names = []
        while len(names) < 1 or names[-1] != "later":
            event = next_event(proc)
            assert event["schema_version"] == 1 and event["kind"] == "task.added"
            names.append(event["data"]["name"])
        assert "before" not in names, "without --since the stream starts at the end of the log"
        assert names[-1] == "later" and event["data"]["deps"] == [1] and event["subject"] == "3"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err


def test_follow_since_replays_then_follows_and_kind_filters(repo):
    assert ak("task", "add", "one", cwd=repo).code == 0
    claim = ak("claim", "--agent", "a1", "--json", cwd=repo).json
    proc = follow(repo, "--since", "0", "--kind", "task.added", "--json")
    try:
        assert next_event(proc)["data"]["name"] == "one"  # replayed; the claim's events are filtered out
        assert ak("release", claim["claim_id"], cwd=repo).code == 0
        assert ak("task", "add", "two", cwd=repo).code == 0
        event = next_event(proc)
        assert (event["kind"], event["data"]["name"]) == ("task.added", "two")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_follow_ends_quietly_when_its_reader_goes_away(repo):
    proc = subprocess.Popen(f"{sys.executable} -m agentkit.cli events --follow --since 0 | head -1", shell=True,
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name in ("a", "b", "c"):
        assert ak("task", "add", name, cwd=repo).code == 0
    out, err = proc.communicate(timeout=30)
    assert out.split("\t")[1] == "task.added" and out.count("\n") == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_follow_refuses_a_negative_since_like_events_does(repo):
    res = ak("events", "--follow", "--since", "-1", "--json", cwd=repo)
    assert res.code == 2 and "--since -1" in res.json["error"]["message"]
