"""Moving: the Service now names another pool; take its objects out of the one it was in.

Entered from Pending when a valid configuration names a pool other than the binding's (adding a
cloud-provider configuration gives the Service a ``cloud--`` pool, as in the Go dklb). Runs
under the old pool's lock. Removes this Service's objects from the old pool, the way Deleting
does, and deletes that pool when it is left empty, no other binding refers to it and dklb made
it; a pool someone else made is never deleted. Then fires ``moved``: the binding forgets the old
pool and goes back to Pending, which accepts it into the new one. Safe to repeat after a crash:
the objects are recomputed from the pool as it is.
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome
from engine.edgelb.errors import EdgeLBError
from engine.model.translation import made_by_a_dklb
from states.pool import take_out


def enter(ctx: Context) -> Outcome:
    name = ctx.binding.pool
    assert name is not None, "Moving is entered only by a binding recorded on a pool"
    failure = take_out(ctx, name, delete_if_empty=_made_by_dklb(ctx, name))
    if failure is not None:
        return failure
    return Fire(
        "moved",
        reason="LeftPool",
        message=f'this Service\'s objects left EdgeLB pool "{name}"',
        updates={"pool": None, "objects": None},
    )


def _made_by_dklb(ctx: Context, name: str) -> bool:
    record = ctx.store.pool(name)
    if record is not None and (record.created_by_dklb or record.pre_existing):
        return record.created_by_dklb
    try:
        return made_by_a_dklb(ctx.edgelb.get_pool(name), cluster=ctx.settings.cluster_name)
    except EdgeLBError:
        # Not knowing is not a reason to delete: take_out reads the pool again and reports.
        return False
