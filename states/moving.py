"""Moving: the Service now names another pool; take its objects out of the one it was in.

Entered from Pending when a valid configuration names a pool other than the binding's (adding a
cloud-provider configuration gives the Service a ``cloud--`` pool, as in the Go dklb). Runs under
the old pool's lock. Removes this Service's objects from the old pool, the way Deleting does, and
deletes that pool when it is left empty, no other binding refers to it and dklb made it
(``states.pool.created_by_dklb``); a pool someone else made is never deleted. Then fires
``moved``: the binding forgets the old pool and goes back to Pending, which accepts it into the
new one. Safe to repeat after a crash: the objects are recomputed from the pool as it is.
"""

from __future__ import annotations

from engine.contract import Context, Fire, Outcome
from states.pool import take_out


def enter(ctx: Context) -> Outcome:
    name = ctx.binding.pool
    assert name is not None, "Moving is entered only by a binding recorded on a pool"
    failure = take_out(ctx, name, may_delete=True)
    if failure is not None:
        return failure
    return Fire(
        "moved",
        reason="LeftPool",
        message=f'this Service\'s objects left EdgeLB pool "{name}"',
        updates={"pool": None, "objects": None},
    )
