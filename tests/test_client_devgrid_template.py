"""DevGrid's documented client: the "Generic Bash Template" of seeds/002_2e1e821497ae258a.txt, run verbatim
by bash with only its host swapped for a live deploytrack and `./deploy.sh` a stub that exits with the
deployment's outcome. The template sends with curl, prints a line by the HTTP code (201 is success) and
exits with the deployment's own status, whatever DevGrid answered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import auth

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("curl") is None,
                                reason="bash and curl run the template")


# The "Generic Bash Template" exactly as DevGrid's document prints it (seeds/002_2e1e821497ae258a.txt),
# kept with the tests so they run from any checkout.
TEMPLATE = Path(__file__).parent / "data" / "devgrid_bash_template.sh"


def template(url: str) -> str:
    return TEMPLATE.read_text().replace("https://prod.api.devgrid.io", url)


def run(workdir: Path, url: str, deploy_exit: int, **env: str) -> subprocess.CompletedProcess[str]:
    (workdir / "deploy.sh").write_text(f"#!/bin/sh\nexit {deploy_exit}\n")
    (workdir / "deploy.sh").chmod(0o755)
    (workdir / "send.sh").write_text(template(url))
    return subprocess.run(["bash", "send.sh"], cwd=workdir, capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], **env})


def test_template_runs_and_every_run_counts(live_server, token, tmp_path):
    """Without BUILD_ID the template sends build_id "unknown" each time: each run is still its own deployment."""
    env = {"DEVGRID_API_KEY": token, "DEVGRID_ENTITY_ID": "my-app"}
    for outcome in (0, 0, 3):
        done = run(tmp_path, live_server.url, outcome, **env)
        assert done.returncode == outcome, done.stderr  # the deployment's own exit status
        assert "Successfully sent deployment event to DevGrid" in done.stdout, done.stdout + done.stderr
    events = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert [e["status"] for e in events] == ["failed", "completed", "completed"]
    assert {e["build_id"] for e in events} == {"unknown"}
    assert events[0]["summary"] == "Deployment failed" and events[0]["actor"] == "system"
    deployments = httpx.get(f"{live_server.url}/api/v1/deployments", headers=auth(token), timeout=10).json()
    assert len(deployments["deployments"]) == 3


def test_template_with_a_build_id_and_a_wrong_key(live_server, token, tmp_path):
    """A real BUILD_ID makes a re-run of the same build one event; a wrong key warns but never fails the deploy."""
    env = {"DEVGRID_API_KEY": token, "DEVGRID_ENTITY_ID": "my-app", "BUILD_ID": "4711", "COMMIT_SHA": "a1b2c3d4",
           "BUILD_URL": "https://ci.example.com/builds/4711", "INITIATOR": "jenkins"}
    for _ in range(2):
        done = run(tmp_path, live_server.url, 0, **env)
        assert done.returncode == 0 and "Successfully sent" in done.stdout, done.stdout + done.stderr
    refused = run(tmp_path, live_server.url, 0, **{**env, "DEVGRID_API_KEY": "not-a-key"})
    assert refused.returncode == 0
    assert "Failed to send event to DevGrid (HTTP 401)" in refused.stdout and "Invalid API key" in refused.stdout
    [event] = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert (event["build_id"], event["scm_sha"], event["build_url"], event["actor"]) == (
        "4711", "a1b2c3d4", "https://ci.example.com/builds/4711", "jenkins")
