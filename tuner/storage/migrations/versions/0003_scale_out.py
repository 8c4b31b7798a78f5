"""Scale-out: a coordinator lease per study, and indexes for claims across studies.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("coordinator", sa.String(255)))
        batch.add_column(sa.Column("coordinator_beat_at", sa.Double))
    op.create_index("ix_trials_state_study", "trials", ["state", "study_id", "number"])
    op.create_index("ix_trials_worker", "trials", ["worker_id"])


def downgrade() -> None:
    op.drop_index("ix_trials_worker", "trials")
    op.drop_index("ix_trials_state_study", "trials")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("coordinator_beat_at")
        batch.drop_column("coordinator")
