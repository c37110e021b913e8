"""Webhooks: lifecycle events of `suspension.events` delivered over HTTP to the endpoints of each space.

The batch loop (``handler.py``) turns each event into one pending delivery per matching endpoint, in the
batch's transaction; the dispatcher (``dispatcher.py``) beside it sends the due ones of the partitions
this instance holds, signed (``signing.py``, Standard Webhooks), to public addresses only
(``guard.py``), one at a time per endpoint and customer, and records every attempt (``store.py``).
"""
