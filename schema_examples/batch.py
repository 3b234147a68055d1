"""Fan-out / fan-in: process every item of a batch in parallel, then aggregate (seed 004).

``start_batch`` creates the batch and its items and schedules one ``process_one`` action
per item (fan-out), each linked to its item by an edge that shows the item's progress.
Every action records its result and calls ``increment_completed``; that mutation runs in a
transaction, so concurrent actions never lose an increment, and the one that completes
the batch schedules ``on_complete`` (fan-in), which writes the summary. Deleting a batch
deletes its items, which cancels the jobs that have not run.

    python -m schema_examples.batch      # runs with a real background worker
"""

from __future__ import annotations

import time
from typing import Any, Literal

from ents import App, ValidationError, define_ent, define_ent_schema
from ents.clock import Clock

schema = define_ent_schema(
    {
        "batches": define_ent({"total_items": int})
        .field("completed_items", int, default=0)
        .field("status", Literal["processing", "completed"], default="processing")
        .field("summary", str | None)
        .edges("items", ref=True),
        "items": define_ent({"word": str})
        .field("result", str | None)
        .edge("batch", to="batches")
        .edge("job", to="_scheduled_functions", deletion="hard"),
    }
)


def start_batch(ctx: Any, words: list[str]) -> str:
    if not words:
        raise ValidationError("A batch needs at least one item", table="batches", field="words")
    batch_id = ctx.table("batches").insert({"total_items": len(words)})
    for word in words:
        item_id = ctx.table("items").insert({"word": word, "batch_id": batch_id})
        job_id = ctx.scheduler.run_after(0, process_one, {"item_id": item_id, "batch_id": batch_id})
        ctx.table("items").get_x(item_id).patch({"job_id": job_id})
    return str(batch_id)


def process_one(ctx: Any, item_id: str, batch_id: str) -> None:
    """One item: the slow or external part happens here, in an action."""
    word = ctx.run_query(get_word, {"item_id": item_id})
    if word is None:
        return
    result = word[::-1].upper()  # stands in for an API call
    ctx.run_mutation(update_result, {"item_id": item_id, "result": result})
    ctx.run_mutation(increment_completed, {"batch_id": batch_id})


def get_word(ctx: Any, item_id: str) -> str | None:
    item = ctx.table("items").get(item_id)
    return item.word if item is not None else None


def update_result(ctx: Any, item_id: str, result: str) -> None:
    item = ctx.table("items").get(item_id)
    if item is not None:
        item.patch({"result": result})


def increment_completed(ctx: Any, batch_id: str) -> None:
    batch = ctx.table("batches").get(batch_id)
    if batch is None:
        return
    completed = batch.completed_items + 1
    done = completed >= batch.total_items
    batch.patch({"completed_items": completed, "status": "completed" if done else "processing"})
    if done:
        ctx.scheduler.run_after(0, on_complete, {"batch_id": batch_id})


def on_complete(ctx: Any, batch_id: str) -> None:
    batch = ctx.table("batches").get(batch_id)
    if batch is not None:
        results = [item.result for item in batch.edge("items")]
        batch.patch({"summary": " ".join(r for r in results if r)})


def delete_batch(ctx: Any, batch_id: str) -> None:
    ctx.table("batches").get_x(batch_id).delete()


def batch_status(ctx: Any, batch_id: str) -> dict[str, Any]:
    batch = ctx.table("batches").get_x(batch_id)
    return {
        "status": batch.status,
        "completed_items": batch.completed_items,
        "total_items": batch.total_items,
        "summary": batch.summary,
        "jobs": batch.edge("items").map(lambda i: i.edge("job").state.kind if i.edge("job") else None),
    }


def make_app(url: str | None = None, clock: Clock | None = None) -> App:
    """The batch app on ``url`` (in-memory SQLite by default)."""
    app = App(schema, url or "sqlite://", clock=clock)
    app.mutation(start_batch)
    app.mutation(delete_batch)
    app.query(batch_status)
    app.internal_query(get_word)
    app.internal_mutation(update_result)
    app.internal_mutation(increment_completed)
    app.internal_mutation(on_complete)
    app.internal_action(process_one)
    return app


def main() -> dict[str, Any]:
    words = "the quick brown fox jumps over the lazy dog".split()
    with make_app() as app, app.worker(concurrency=4):
        batch_id = app.run_mutation(start_batch, {"words": words})
        print(f"fanned out {len(words)} items to 4 concurrent actions")
        deadline = time.monotonic() + 30
        while (status := app.run_query(batch_status, {"batch_id": batch_id}))["summary"] is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the batch did not complete")
            time.sleep(0.01)
        print(f"fanned in: {status['completed_items']}/{status['total_items']} items, status {status['status']}")
        print(f"summary: {status['summary']}")
        return status


if __name__ == "__main__":
    main()
