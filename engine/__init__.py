"""dklb's engine: every layer of the controller but the lifecycle itself (``states/``).

The layers, from the bottom; each may import only those above it in this list (enforced by
``tests/unit/test_layers.py``):

    model/       pure: the configuration object and its parser, the translation into EdgeLB
                 objects, the checks shared by the controller and the webhook, how a Service is
                 read (``services``), the operator's settings, durations. No I/O. (It uses
                 ``edgelb.schema``, EdgeLB's pool schema, which is pure too.)
    edgelb/      the EdgeLB port: its schema, errors and the HTTP client
    kube/        the Kubernetes port: API client, adapter, watch, leader election, Events, Nodes
    store/       the database and all its SQL: bindings, pools, history; Alembic migrations
    contract.py  the handler API: what a state handler (``states/``) sees and may answer
    runtime/     how a transition is made durable and scheduled: the lifecycle loader, the
                 reconciler, the controller (work queue, workers, APScheduler), the fence, the
                 orphan sweeper. Names no state and imports nothing of ``states/``: the
                 lifecycle declaration does.
    telemetry/   metrics, health probes, logs, and the HTTP server they share with the webhook
    admission/   the admission webhook: the review (pure), its server, certificates, registration
    app.py       the composition root of ``dklb run``: build the parts, start, stop in reverse
    cli/         the ``dklb`` command: one module per sub-command

Data flow of ``dklb run``: the Service watch (``kube``) fills a cache and queues keys; a worker
(``runtime``) loads the binding (``store``), fires what the observed world implies and runs the
handler of its state (``states/``), which talks to EdgeLB and Kubernetes through the ports; the
outcome is committed in one transaction, then Events are posted.
"""
