"""The model: what dklb decides, as pure functions and immutable values. No I/O.

``services`` reads a Service (key, annotations, "does dklb handle it", finalizer); ``parse``
turns the ``kubernetes.dcos.io/dklb-config`` annotation into a ``config.PoolConfig`` (through
``strict_yaml``, ``report``, and ``cloud`` for the ``cloudProviderConfiguration`` it holds) or
every error; ``checks`` is the judgement the Pending handler and the
admission webhook share; ``translation`` makes EdgeLB frontends, backends and pools of it and
reads metadata back; ``settings`` are the operator's; ``durations`` parses ``30s``/``2m``.
``ingress`` is the same for Ingresses (selection, configuration, backends, rules, names).

What it may import: only itself and ``engine.edgelb.schema`` (EdgeLB's pool schema, pure too).
Everything else in ``engine`` may import the model; it is tested as tables of cases.
"""
