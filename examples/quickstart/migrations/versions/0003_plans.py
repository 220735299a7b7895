"""add plan to accounts, seed the default

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
    op.add_column("accounts", sa.Column("plan", sa.String(20), nullable=False,
                                        server_default="free"))
    op.create_table("plans", sa.Column("name", sa.String(20), primary_key=True))
    op.bulk_insert(sa.table("plans", sa.column("name", sa.String)),
                   [{"name": "free"}, {"name": "team"}])


def downgrade() -> None:
    op.drop_table("plans")
    op.drop_column("accounts", "plan")
