"""SQLModel models for the read-path benchmark (module level: SQLModel resolves the
annotations of its relationships through this module's globals)."""

from typing import Optional

from sqlmodel import Field, Relationship, SQLModel


class SMUser(SQLModel, table=True):
    __tablename__ = "users"
    id: Optional[int] = Field(default=None, primary_key=True)  # noqa: UP045
    name: str
    profile: Optional["SMProfile"] = Relationship(back_populates="user", sa_relationship_kwargs={"uselist": False})  # noqa: UP045


class SMProfile(SQLModel, table=True):
    __tablename__ = "profiles"
    id: Optional[int] = Field(default=None, primary_key=True)  # noqa: UP045
    bio: str
    user_id: int = Field(foreign_key="users.id", unique=True)
    user: Optional[SMUser] = Relationship(back_populates="profile")  # noqa: UP045
