"""The SQL that moves a row from state to state: the journal's half of the row rules.

``RECORD_GUARD`` is where the journal enforces which reported outcome may replace the
state it holds (the rule ``ibimport.domain.rowstate.replaces`` states in Python); keep the two
in step, and test one against the other. ``MARK_SQL`` keeps the token-TTL clock.
"""

from __future__ import annotations

from ibimport.domain.results import RowStatus

__all__ = ["CANCEL_SQL", "MARK_SQL", "PENDING_SQL", "RECORD_GUARD", "RECORD_SQL"]

_DONE_STATES = (RowStatus.SUCCEEDED.value, RowStatus.EXISTS.value)

# first_sent_at is when this clientToken was first sent (the token-TTL clock): kept while
# the token stays the same, restarted when the row's content (and so its token) changed.
MARK_SQL = """
INSERT INTO rows (name, semantic_version, row, client_token, state, attempts,
                  first_sent_at, updated_at)
VALUES (?, ?, ?, ?, 'in_flight', ?, ?, ?)
ON CONFLICT (name, semantic_version) DO UPDATE SET
    row = excluded.row,
    client_token = excluded.client_token,
    state = 'in_flight',
    attempts = excluded.attempts,
    first_sent_at = CASE
        WHEN rows.client_token = excluded.client_token AND rows.first_sent_at IS NOT NULL
        THEN rows.first_sent_at ELSE excluded.first_sent_at END,
    updated_at = excluded.updated_at
"""

#: When a reported outcome (``excluded``) replaces the row the journal holds (``rows``):
#: an outcome never downgrades a done row sent with the same token (a late or duplicate
#: report must not make a resume send it again), and "skipped"/"pending" carry no news
#: about a row the journal already knows, so they only insert.
RECORD_GUARD = f"""excluded.state NOT IN ('skipped', 'pending')
  AND NOT (rows.state IN {_DONE_STATES!r} AND excluded.state NOT IN {_DONE_STATES!r}
           AND rows.client_token = excluded.client_token)
"""

RECORD_SQL = f"""
INSERT INTO rows (name, semantic_version, row, client_token, state, attempts, image_arn,
                  request_id, error_code, error_message, first_sent_at, updated_at,
                  account, region)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)
ON CONFLICT (name, semantic_version) DO UPDATE SET
    row = excluded.row,
    client_token = excluded.client_token,
    state = excluded.state,
    attempts = excluded.attempts,
    image_arn = excluded.image_arn,
    request_id = excluded.request_id,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    first_sent_at = CASE WHEN rows.client_token = excluded.client_token
                         THEN rows.first_sent_at ELSE NULL END,
    updated_at = excluded.updated_at,
    account = excluded.account,
    region = excluded.region
WHERE {RECORD_GUARD}"""

# A fresh journal's rows before the run (``record_pending``): rows it knows keep their state.
PENDING_SQL = """
INSERT INTO rows (name, semantic_version, row, client_token, state, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?)
ON CONFLICT (name, semantic_version) DO NOTHING
"""

# ``ibimport cancel``: the row whose EC2 import task was cancelled. A done row keeps its
# state (its task had ended; a stale ``active`` in the journal is not news); the others
# become ``cancelled``, which a re-run starts again under a new task.
CANCEL_SQL = f"""
UPDATE rows SET state = 'cancelled', error_code = ?, error_message = ?, updated_at = ?
WHERE name = ? AND semantic_version = ? AND state NOT IN {_DONE_STATES!r}
"""
