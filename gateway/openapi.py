"""OpenAPI 3 built from the route table, so that it describes exactly the routes that exist."""

from __future__ import annotations

import re
from typing import Any

from gateway.routing import Route

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": ["object", "null"]},
            },
        }
    },
}


def _params(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    params += [
        {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
        for q in route.query
    ]
    if route.auth == "key":
        params.append(
            {
                "name": "X-Workspace-ID",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
        )
    return params


def build_openapi(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI document of these routes."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR}
    for r in sorted(routes, key=lambda x: (x.path, x.method)):
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": f"{r.method.lower()}_{r.handler.__module__.rsplit('.', 1)[-1]}_"
            f"{r.handler.__name__}",
            "parameters": _params(r),
            "responses": {
                str(r.status): {"description": "success"},
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if r.auth in ("key", "admin"):
            op["security"] = [{"bearer": []}]
        else:
            op["security"] = []
        if r.body is not None:
            schema = r.body.model_json_schema(
                ref_template="#/components/schemas/{model}", by_alias=True
            )
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[r.body.__name__] = schema
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}
                    }
                },
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Omnichat API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
