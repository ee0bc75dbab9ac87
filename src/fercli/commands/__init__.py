"""The `fer` commands, one module per part of the workflow; each command parses its options and
delegates to the core. Importing this package registers every command on `app`, in help order."""

# isort: off
from fercli.commands.app import app, debug_on
from fercli.commands import data, training, using, explaining, demo  # noqa: F401  (registration order)

# isort: on

__all__ = ["app", "debug_on"]
