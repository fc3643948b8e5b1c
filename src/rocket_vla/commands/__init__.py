"""Sub-commands of the `rocket` CLI, one module each."""
