"""`Storage`: the one way into the database.

Guarantees, on SQLite, PostgreSQL and MySQL/MariaDB alike:
- every method is one short transaction; nothing holds a lock while a model trains;
- a claim is atomic: a QUEUED trial becomes RUNNING for exactly one worker;
- a RUNNING trial is finished or requeued only by a statement that names its state and
  its worker, so a late result from a worker that lost its lease is refused, not counted;
- trial numbers are unique per study (a unique constraint settles races);
- the schema is created (unless `create=False`: a reader creates nothing, not even a
  SQLite file) or upgraded with Alembic on first use; another application's database,
  or a file that is not a SQLite database, is refused before anything is written to it;
- a SQLite file this process may not write is read without leaving -wal or -shm files;
- deadlocks, serialization failures and lock timeouts are retried with jittered backoff,
  a lost connection for a while; what waiting cannot heal (a read-only, full or damaged
  database, a missing table, a refused login) is raised at once;
- driver errors, but a unique constraint's (the methods answer those themselves), become
  `StorageError` with a one-line message.

Where each concern lives:
- `engine.py`   the URL, connection options, transactions, retries, schema upgrades;
- `queries.py`  the statements of the queue and the leases (claim, finish, requeue, ...);
- `queue.py`    the trial life cycle, workers and the coordinator's lease (runs queries);
- `studies.py`  creating, updating and deleting studies;
- `reads.py`    what views read: studies, trials, pages, filters, curves, workers.
"""

from __future__ import annotations

from tuner.storage.queue import TrialQueue
from tuner.storage.studies import Studies


class Storage(Studies, TrialQueue):
    """Studies, trials, epochs and workers in a SQL database given by URL:
    `Storage(url, create=True, pool_size=2, reconnect_timeout=120.0)`."""
