"""The request and response shapes, for the OpenAPI docs at /docs (validation.py enforces them)."""

from __future__ import annotations

_ENTITY = {
    "type": "object",
    "required": ["text", "start", "end"],
    "properties": {
        "text": {"type": "string", "description": "the entity as written; must equal sentence[start:end]"},
        "start": {"type": "integer", "minimum": 0, "description": "first character (0-based, inclusive)"},
        "end": {"type": "integer", "description": "one past the last character (exclusive)"},
        "type": {"type": "string", "description": "entity type, e.g. PER, ORG (default: UNK)"},
    },
}

EXAMPLE = {"id": "ex-1", "sentence": "Alice works for Acme in Paris.",
           "subject": {"text": "Alice", "start": 0, "end": 5, "type": "PER"},
           "object": {"text": "Acme", "start": 16, "end": 20, "type": "ORG"}}

PREDICT_REQUEST = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "array", "items": {
        "type": "object",
        "required": ["sentence", "subject", "object"],
        "properties": {"id": {"type": "string", "description": "echoed back (default: the item's index)"},
                       "sentence": {"type": "string"}, "subject": _ENTITY, "object": _ENTITY},
    }},
    "example": [EXAMPLE],
}}}}

_PROBLEM = {"type": "object", "properties": {
    "error": {"type": "string", "description": "the first problem, as one line"},
    "count": {"type": "integer", "description": "how many problems the request has"},
    "problems": {"type": "array", "items": {"type": "object", "properties": {
        "item": {"type": ["integer", "null"], "description": "0-based index of the example (null: the whole body)"},
        "field": {"type": "string", "description": "e.g. subject.start, sentence, body"},
        "message": {"type": "string"}}}},
}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PREDICT_RESPONSES: dict[int | str, dict] = {
    200: _json("one prediction per example, in request order", {"type": "object", "properties": {
        "label_version": {"type": "string", "description": "short hash of the model's label list"},
        "predictions": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "label": {"type": "string"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"},
                              "description": "label -> probability: all labels in label order, or the top k"}}}},
    }}),
    400: _json("the body is not JSON", _PROBLEM),
    401: _json("missing or wrong API key (only with --api-key-file)", {"type": "object"}),
    413: _json("body larger than --max-body-bytes, or more examples than --max-items", _PROBLEM),
    422: _json("an example is invalid: missing key, wrong type, span outside the sentence, text not at "
               "its span, sentence longer than --max-sentence-chars", _PROBLEM),
    503: _json("the model is still loading (or failed to load: see /readyz)", {"type": "object"}),
}
