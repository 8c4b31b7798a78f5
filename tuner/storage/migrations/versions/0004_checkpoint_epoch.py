"""Checkpointed trials: the last epoch a trial's resumable checkpoint holds, and the
PAUSED state (a trial waiting at a rung for promotion), with the states the database
accepts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


STATES = "state IN ('QUEUED', 'RUNNING', 'PAUSED', 'COMPLETE', 'PRUNED', 'FAILED')"


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("checkpoint_epoch", sa.Integer))
        batch.create_check_constraint("ck_trials_state", STATES)


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_constraint("ck_trials_state", type_="check")
        batch.drop_column("checkpoint_epoch")
