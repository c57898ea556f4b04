"""SciServer client pieces shared by the ``sciserver-files`` and ``sciserver-compute`` backends."""

from .session import (
    DEFAULT_FILE_SERVICE_URL,
    DEFAULT_LOGIN_URL,
    DEFAULT_RACM_URL,
    SciServerAuthError,
    SciServerSession,
    server_message,
)

__all__ = [
    "DEFAULT_FILE_SERVICE_URL",
    "DEFAULT_LOGIN_URL",
    "DEFAULT_RACM_URL",
    "SciServerAuthError",
    "SciServerSession",
    "server_message",
]
