"""The routes outside actions and activations: `GET /ping` and
`GET /api/v1/namespaces` as OpenWhisk answers them, and `GET
/emulator/containers` (not OpenWhisk: for tests and operators, it lists the
running containers)."""

from __future__ import annotations

from flask import Blueprint, Response

from .http_common import json_answer, platform

service = Blueprint("service", __name__)


@service.get("/ping")
def ping() -> Response:
    return json_answer("pong")


@service.get("/api/v1/namespaces")
def namespaces() -> Response:
    return json_answer([platform().s.namespace])


@service.get("/emulator/containers")
def containers() -> Response:
    return json_answer(platform().containers())
