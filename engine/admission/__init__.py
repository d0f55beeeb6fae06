"""The admission webhook: invalid or forbidden Service changes refused at ``kubectl apply`` time.

``review`` decides (pure: an AdmissionReview in, its answer out, with the very checks Pending
uses); ``server`` serves ``/mutate`` and ``/validate`` over HTTPS; ``certs`` generates
self-signed certificates; ``register`` writes the Mutating- and ValidatingWebhookConfiguration;
``plan`` checks the ``--admission-*`` flags together; ``webhook`` is the part ``dklb run``
starts and stops.

What it may import: the model, the Kubernetes port's API client, and ``telemetry.serving``
(the HTTP server it shares with the probes). Never the runtime, the store or the CLI: the
webhook never calls EdgeLB and never reads the database.
"""
