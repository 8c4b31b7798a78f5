"""Several objectives: a trial's value of each objective, in the study's order, and what it
measured (the built-in measures, the study's own, and every name an objective or a
constraint reads), by which its constraints are judged.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("values", sa.JSON))
        batch.add_column(sa.Column("measures", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("measures")
        batch.drop_column("values")
