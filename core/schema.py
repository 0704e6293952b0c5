"""The error answers of the API in its OpenAPI schema (a drf-spectacular postprocessing hook).

drf-spectacular documents what a view returns when all goes well; the errors come from layers it does
not see: authentication (401), permissions and roles (403), project scoping, lookups and pagination
(404), serializer validation and the request-limits middleware (400, 411, 413, 415). Clients, and
tests/test_api_fuzz.py, hold the API to its schema, so every operation gets the errors it can answer,
each with one of two shared bodies:

* `Error`: `{"detail": "..."}`, what every error but validation returns.
* `ValidationError`: field name (or `non_field_errors`) → list of messages; list and dict fields nest
  their items' errors by index or key (a list of objects: each item's errors in its place). A 400 is
  one of the two.

Which codes an operation gets follows from its view: 403 only where something can refuse a member
(a write, whose token may be read-only or whose session lacks a CSRF token, or a role check stricter
than reading), 404 where there is something to look up (a path parameter, a page number; a view whose
body names something, like a vote's workflow, documents its own 404), 411/413/415 where a body is
accepted. Codes a view documents itself (429 on serving and voting, 409 on downloads) keep its
description and get the shared body.
"""

from django.urls import Resolver404, resolve

from core.permissions import READ_ROLES, HasProjectRole

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR = {
    "type": "object",
    "description": "Validation errors: each field that failed (or `non_field_errors`) with its messages; "
    "list and dict fields nest their items' errors by index or key, lists of objects or lists give each "
    "item's errors in its place.",
    "additionalProperties": {
        "oneOf": [
            # Messages; for a list of objects (or of lists), each item's errors in its place.
            {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array", "items": {}}]},
            },
            {"type": "object", "description": "Errors of a list's or dict's items, by index or key."},
        ]
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
BAD_REQUEST = {"oneOf": [{"$ref": "#/components/schemas/ValidationError"}, ERROR_REF]}

DESCRIPTIONS = {
    "400": "Invalid request: errors by field (validation) or a `detail` (a malformed body or query "
    "parameter, a NUL character in the address).",
    "401": "The API token is malformed, unknown, revoked or expired, or none was sent where one is needed.",
    "403": "Not allowed: your role in the project does not allow this, a read-only token asked to change "
    "something, or a browser session sent no CSRF token.",
    "404": "Not found, or not yours to see (no role in the project, a private project): no such project, "
    "object or page.",
    "409": "Not now: the request conflicts with the current state (e.g. an export not finished yet); "
    "`detail` says why.",
    "411": "A chunked body without Content-Length.",
    "413": "The body is over the size limit (SKYVOTE_MAX_REQUEST_BYTES; uploads SKYVOTE_MAX_UPLOAD_BYTES).",
    "415": "No Content-Type, or one this operation does not parse.",
}
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Token`"}},
    "429": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
}


def _view_class(path: str, operation: dict):
    """The view class behind a schema path, found by resolving it with sample parameter values."""
    sample = path
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path":
            value = "1" if parameter.get("schema", {}).get("type") == "integer" else "x"
            sample = sample.replace("{" + parameter["name"] + "}", value)
    try:
        return getattr(resolve(sample).func, "cls", None)
    except Resolver404:
        return None


def _role_can_refuse(view_class, method: str) -> bool:
    """Whether the view's role check can refuse someone who may read the project (403, not 404)."""
    if view_class is None or HasProjectRole not in getattr(view_class, "permission_classes", ()):
        return False
    roles = getattr(view_class, "required_roles_by_method", {}).get(
        method.upper(), getattr(view_class, "required_roles", READ_ROLES)
    )
    return not READ_ROLES <= set(roles)


def error_codes(path: str, method: str, operation: dict) -> list[str]:
    """The error statuses the operation can answer (besides those its view documents itself)."""
    view_class = _view_class(path, operation)
    has_body = "requestBody" in operation
    parameters = operation.get("parameters", [])
    codes = ["400", "401"]
    if method in WRITE_METHODS or _role_can_refuse(view_class, method):
        codes.append("403")
    # A body that names something to look up (a vote's workflow, a search's project) is the view's to
    # document; every path parameter and page number can miss.
    if any(p.get("in") == "path" or (p.get("in") == "query" and p.get("name") == "page") for p in parameters):
        codes.append("404")
    if has_body:
        codes += ["411", "413", "415"]
    return codes


def _body_for(code: str) -> dict:
    return BAD_REQUEST if code == "400" else ERROR_REF


def document_errors(result, generator, request, public):
    """Postprocessing hook: the shared error bodies in components, and each operation's errors."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas["ValidationError"] = VALIDATION_ERROR
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code in error_codes(path, method, operation):
                responses.setdefault(code, {})
            for code, response in responses.items():
                if not code.startswith("4"):
                    continue
                response["content"] = {"application/json": {"schema": _body_for(code)}}
                if not response.get("description") and code in DESCRIPTIONS:
                    response["description"] = DESCRIPTIONS[code]
                if code in HEADERS:
                    response.setdefault("headers", HEADERS[code])
            operation["responses"] = dict(sorted(responses.items()))
    return result
