"""Disaster recovery: `suspensions db check` and `suspensions db rebuild --from-topics` (issue 27, part 3).

``plan`` holds the pure decisions (what differs between the topic and the table, what a topic record
becomes in PostgreSQL, what to do with an old outbox row, where a consumer group resumes); ``topics`` reads
topics to the end offsets seen at the start; ``run`` wires them to PostgreSQL (SQL in
``workers/runtime/db/rebuild.py``) and to the consumer group.
"""
