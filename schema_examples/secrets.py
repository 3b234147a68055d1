"""Rules: every user sees and changes only their own secrets (Convex Ents' ``addEntRules``).

``App(schema, rules=rules)`` builds ``rules(ctx)`` once per function call. It finds the
viewer from the identity the client was made with (``app.client(identity=...)``), looking
the user up through ``ctx.skip_rules.table`` (the rules cannot depend on themselves). The
read rule hides other users' secrets from every read through ``ctx.table``; the write rule
lets a user create secrets only for themselves and never hand one over to someone else.
Functions stay simple: ``my_secrets`` is just ``ctx.table("secrets")``, and no function can
leak or change a secret of someone else, however it is written.

    python -m schema_examples.secrets
"""

from __future__ import annotations

from typing import Any

from ents import App, EntNotFoundError, RuleError, Rules, WriteChange, define_ent, define_ent_schema
from ents.clock import Clock

schema = define_ent_schema(
    {
        "users": define_ent({"name": str}).field("token", str, unique=True).edges("secrets", ref="owner_id"),
        "secrets": define_ent({"text": str}).edge("owner", to="users", field="owner_id"),
    }
)


def viewer_id(ctx: Any) -> str | None:
    """The calling user's id, from the identity the client gives (None when anonymous)."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    user = ctx.skip_rules.table("users").get("token", identity["token"])
    return None if user is None else str(user._id)


def rules(ctx: Any) -> dict[str, Rules]:
    viewer = viewer_id(ctx)

    def write(change: WriteChange) -> bool:
        if change.operation == "create":  # only for yourself
            return change.value is not None and change.value.get("owner_id") == viewer
        if change.operation == "update":  # never hand a secret over
            return change.value is not None and change.value.get("owner_id", change.ent.owner_id) == change.ent.owner_id
        return bool(change.ent.owner_id == viewer)  # delete

    return {"secrets": Rules(read=lambda secret: secret.owner_id == viewer, write=write)}


def sign_up(ctx: Any, name: str, token: str) -> str:
    return str(ctx.table("users").insert({"name": name, "token": token}))


def add_secret(ctx: Any, text: str) -> str:
    return str(ctx.table("secrets").insert({"text": text, "owner_id": viewer_id(ctx)}))


def give_secret(ctx: Any, text: str, owner_id: str) -> str:
    """A careless function: it would create a secret for anyone. The write rule says no."""
    return str(ctx.table("secrets").insert({"text": text, "owner_id": owner_id}))


def my_secrets(ctx: Any) -> list[str]:
    return [secret.text for secret in ctx.table("secrets")]


def read_secret(ctx: Any, secret_id: str) -> str | None:
    secret = ctx.table("secrets").get(secret_id)
    return None if secret is None else str(secret.text)


def delete_secret(ctx: Any, secret_id: str) -> None:
    ctx.table("secrets").get_x(secret_id).delete()


def count_all_secrets(ctx: Any) -> int:
    """For operators: every secret, whoever owns it (an internal query, without rules)."""
    return len(ctx.skip_rules.table("secrets"))


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The secrets app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock, rules=rules)
    app.mutation(sign_up)
    app.mutation(add_secret)
    app.mutation(give_secret)
    app.mutation(delete_secret)
    app.query(my_secrets)
    app.query(read_secret)
    app.internal_query(count_all_secrets)
    return app


def main() -> dict[str, Any]:
    with make_app() as app:
        ada_id = app.run_mutation(sign_up, {"name": "Ada", "token": "ada-token"})
        app.run_mutation(sign_up, {"name": "Bob", "token": "bob-token"})
        ada = app.client(identity={"token": "ada-token"})
        bob = app.client(identity={"token": "bob-token"})
        diary = ada.mutation(add_secret, {"text": "Ada's diary"})
        bob.mutation(add_secret, {"text": "Bob's PIN is 1234"})
        result: dict[str, Any] = {
            "ada sees": ada.query(my_secrets),
            "bob sees": bob.query(my_secrets),
            "anonymous sees": app.client().query(my_secrets),
            "bob reads ada's diary": bob.query(read_secret, {"secret_id": diary}),
        }
        for who, value in result.items():
            print(f"{who}: {value}")
        try:
            bob.mutation(give_secret, {"text": "a gift", "owner_id": ada_id})
        except RuleError as exc:
            result["bob gives ada a secret"] = str(exc)
            print(f"bob gives ada a secret: refused: {exc}")
        try:
            bob.mutation(delete_secret, {"secret_id": diary})
        except EntNotFoundError as exc:
            result["bob deletes ada's diary"] = str(exc)
            print(f"bob deletes ada's diary: refused: {exc}")
        result["secrets in all"] = app.run_query(count_all_secrets)
        print(f"secrets in all (an internal query, without rules): {result['secrets in all']}")
        return result


if __name__ == "__main__":
    main()
