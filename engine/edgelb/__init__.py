"""Everything dklb knows about EdgeLB: the V2 pool schema, typed errors and the client port.

Handlers in ``states/`` call an object satisfying ``engine.edgelb.port.EdgeLB``; the real HTTP
client and the local EdgeLB implement it, tests use an in-memory fake.
"""
