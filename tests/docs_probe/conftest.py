"""The protocol tests' fixtures (a funded organization, the sandbox, a key's client)."""

from tests.protocols.conftest import client_for, funded, sandbox  # noqa: F401
