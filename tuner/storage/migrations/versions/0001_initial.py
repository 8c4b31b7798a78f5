"""Studies, trials, per-epoch metrics and workers.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("strategy", sa.String(50), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("definition", sa.Text),
        sa.Column("definition_hash", sa.String(64)),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(50), nullable=False),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="SET NULL")),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
        sa.Column("stopped_at", sa.Double),
        sa.Column("trials_done", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("best_epoch", sa.Integer),
        sa.Column("epochs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id", ondelete="SET NULL")),
        sa.Column("error", sa.Text),
        sa.Column("queued_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.UniqueConstraint("study_id", "number"),
    )
    op.create_index("ix_trials_study_state", "trials", ["study_id", "state", "number"])
    op.create_table(
        "trial_epochs",
        sa.Column(
            "trial_id",
            sa.Integer,
            sa.ForeignKey("trials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("value", sa.Double),
        sa.Column("metrics", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trial_epochs")
    op.drop_index("ix_trials_study_state", "trials")
    op.drop_table("trials")
    op.drop_table("workers")
    op.drop_table("studies")
