"""The runtime: how a binding's transitions are made durable, scheduled and serialized.

``lifecycle`` loads ``states/lifecycle.yaml`` into a ``transitions`` machine; ``reconciler`` is
``reconcile(key) -> seconds until the next wake-up`` (one transaction per transition);
``controller`` runs it on worker threads behind a ``workqueue`` (one key at a time, keys in
parallel) with APScheduler wake-ups persisted in the store; ``cache`` holds the observed
Services and the pool locks; ``fence`` refuses every write once leadership is lost;
``orphans`` sweeps pools nothing uses; ``recovery`` wakes the bindings an EdgeLB outage left
waiting once EdgeLB answers again; ``crashpoints`` lets tests SIGKILL between any two steps.

What it may import: the model, the contract, the store and the ports (``edgelb``, ``kube``).
Never ``states`` (the lifecycle declaration names the handlers, guards and external trigger),
nor the admission webhook, telemetry (it reports through hooks it is given), the app or the CLI.
"""
