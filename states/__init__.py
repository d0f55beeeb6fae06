"""The binding lifecycle: ``lifecycle.yaml`` declares it, one module per state says what it does.

Handlers (``enter(ctx) -> Outcome``, see ``engine.contract``): ``pending``, ``provisioning``,
``awaiting_metadata``, ``ready``, ``deleting``. Rejected and Paused have none: they wait for the
user. Shared by them, and named by the declaration: ``observe`` (the external trigger: what
the observed world fires on a binding), ``guards`` (checks under the pool's lock before a
transition commits) and ``pool`` (the pool a set of bindings wants, used by two handlers).

What it may import: the model, the contract, the store's records and the EdgeLB errors. No
I/O of its own: every side effect goes through the ports in the ``Context``.
"""
