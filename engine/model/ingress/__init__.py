"""The Ingress model (``networking.k8s.io/v1``): pure functions and immutable values, no I/O.

An Ingress arrives from the watcher; ``selection`` decides whether it is ours (IngressClass,
legacy annotation, default class); ``config`` parses its ``kubernetes.dcos.io/dklb-config``
annotation (the Service base fields through ``engine.model.parse``, plus ``frontends.http`` and
``frontends.https``); ``backends`` turns its Service references into one EdgeLB backend per
(Service, port); ``rules`` turns its rules into ordered ``linkBackend.map`` entries, composed over
every Ingress sharing a frontend, and ``matching`` evaluates those entries (and Kubernetes'
own semantics) for tests (and, later, ``dklb plan``); ``naming`` names the EdgeLB objects as the Go dklb
did and reads ownership back from a name by its shape.
"""
