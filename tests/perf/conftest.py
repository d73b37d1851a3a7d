from tests.protocols.conftest import _fresh_cache, client_for, funded, sandbox  # noqa: F401
