"""dklb's runtime: how binding transitions are made durable, scheduled and talked to the outside.

Kubernetes and EdgeLB observations come in through the adapters, become triggers of the
lifecycle declared in ``states/``, and leave as committed transitions (``engine.store``) and
calls to EdgeLB and Kubernetes made by the state handlers through the ports defined here.
"""
