"""``[core] hostname_callable`` for the Celery routing test: each worker reports ``<role>@<host>`` as its task
instances' hostname, so two workers on one machine can be told apart through the REST API."""

from __future__ import annotations

import os
import socket

ROLE_ENV = "CONVMIXER_TEST_WORKER_ROLE"


def role_hostname() -> str:
    role = os.environ.get(ROLE_ENV)
    host = socket.getfqdn()
    return f"{role}@{host}" if role else host
