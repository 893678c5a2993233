"""The lightweight RFC 3261 registrar: accounts, bindings, liveness, server."""
