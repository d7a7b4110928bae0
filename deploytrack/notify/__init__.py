"""Notifications out: what happened (failed production deployment, rollback, incident opened or
resolved, a metric changing band) posted to the operator's webhook URLs.

watch.py notices new facts in the database and puts messages in the durable outbox (outbox.py),
in the same transaction that moves its cursors; sender.py posts due messages with retries and
backoff. The request path never waits for either.
"""
