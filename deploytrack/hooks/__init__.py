"""Inbound webhooks: forges and paging tools push to `/hooks/<source>/<hook id>`.

A source is a module with:
- `NAME`;
- `verify(request, raw, secret) -> bool`: the source's own signature or secret check, on the raw body;
- `to_delivery(request, raw, ctx) -> Delivery`: what the delivery records (deployment events, commits,
  incident changes), its delivery id, or why it is ignored (pings, event types deploytrack does not use).

endpoint.py runs every source through one request path; adding a source is one module and one
entry in `endpoint.SOURCES`.
"""
