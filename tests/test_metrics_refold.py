"""`metrics recompute` refolds only deployment keys with new events; deletions must not hide any."""

from __future__ import annotations

from tests.conftest import auth, create_token, query, run_cli
from tests.dora import at, deploy


def test_recompute_refolds_events_that_reuse_deleted_seqs(client, token, db_path):
    admin = create_token(db_path, "root", "admin")
    deploy(client, token, "1", "success", at(3, 10), product="shop")
    for hour in (11, 12, 13):  # the highest seqs
        deploy(client, token, str(hour), "success", at(3, hour), product="gone")
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0  # first fold: watermark at the top
    assert client.delete("/api/v1/products/gone/events", headers=auth(admin)).status_code == 200
    # Out of arrival order: the result, then its earlier start (both reuse deleted events' seqs).
    deploy(client, token, "2", "success", at(2, 12), product="shop")
    deploy(client, token, "2", "in_progress", at(2, 11), product="shop")
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    rows = query(db_path, "SELECT status, event_count FROM deployments WHERE version = '2'")
    assert rows == [("completed", 2)]  # folded in time order: one deployment, started then completed
