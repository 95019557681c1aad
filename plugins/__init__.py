"""Built-in model families; each sub-package is a plugin registered by an entry point."""
