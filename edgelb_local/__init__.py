"""A local EdgeLB: the EdgeLB V2 API of shared/edgelb-api.md, served on loopback, running one
real HAProxy per pool so that traffic really flows.

It stands in for DC/OS EdgeLB in the demo, the end-to-end tests and the benchmarks
(``dklb edgelb-local``). ``server`` answers the API (over ``transport``) and keeps pools in a state
directory; ``validation`` refuses what the real EdgeLB refuses, with its status codes and texts;
``dataplane`` turns each pool into a running HAProxy (or, with ``--no-dataplane``, into
bookkeeping only); ``faults`` injects latency, errors, timeouts and resets on request.
"""
