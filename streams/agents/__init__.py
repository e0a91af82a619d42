"""One module per stage agent; each has ``register(app, ...)``."""
