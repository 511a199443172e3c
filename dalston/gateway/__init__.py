"""The gateway: one endpoint for clients, routing each request by `model` to a live engine instance.

Engines register themselves (`dalston.registration.Registrar`), heartbeat, and are dropped when the
heartbeats stop; the gateway holds no list of engines of its own beyond the catalog it validates
registrations against. Several replicas share that table through Redis with `--registry`
(`dalston.gateway.redis_registry`); alone, the gateway keeps it in memory.
"""
