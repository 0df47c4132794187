"""A project's next stage starts when its current one ends, not at the next poll of the queue.

Each stage defers the next one in its own transaction, with the project as the job's `lock`, so
the new job cannot be taken until the running job is marked finished a moment later. procrastinate
wakes workers when a job is inserted, which is while the lock is still held; the workers find
nothing they may take and fall back to polling, every 5 s. This trigger wakes them again when a
running job ends (finished, deleted on success, failed, aborted) and another job waits on its lock,
on the channels procrastinate's own insert trigger uses (checked against its manager in the tests).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION sheetreel_wake_lock_waiters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    waiting RECORD;
    payload TEXT;
BEGIN
    IF OLD.lock IS NULL THEN
        RETURN NULL;
    END IF;
    FOR waiting IN
        SELECT id, queue_name FROM procrastinate_jobs WHERE lock = OLD.lock AND status = 'todo' AND id <> OLD.id
    LOOP
        payload := json_build_object('type', 'job_inserted', 'job_id', waiting.id)::text;
        PERFORM pg_notify('procrastinate_queue_v1#' || waiting.queue_name, payload);
        PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    END LOOP;
    RETURN NULL;
END;
$$
"""

# A job that ends on success is deleted (delete_jobs="successful"); one that fails is updated.
TRIGGERS = {
    "sheetreel_wake_on_job_deleted": "AFTER DELETE ON procrastinate_jobs FOR EACH ROW WHEN (OLD.status = 'doing')",
    "sheetreel_wake_on_job_ended": "AFTER UPDATE OF status ON procrastinate_jobs FOR EACH ROW "
                                   "WHEN (OLD.status = 'doing' AND NEW.status <> 'doing')",
}


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql" or not sa.inspect(conn).has_table("procrastinate_jobs"):
        return
    op.execute(FUNCTION)
    for name, when in TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON procrastinate_jobs")
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION sheetreel_wake_lock_waiters()")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON procrastinate_jobs")
    op.execute("DROP FUNCTION IF EXISTS sheetreel_wake_lock_waiters()")
