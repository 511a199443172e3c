"""A JSON Schema for KEDA's `ScaledObject` (keda.sh/v1alpha1), written from KEDA's documented fields.

Pinned to KEDA 2.15: the fields, required keys, types and enums below are those of the ScaledObject
specification (docs/2.15/reference/scaledobject-spec), the Prometheus scaler
(docs/2.15/scalers/prometheus), the CPU scaler (docs/2.15/scalers/cpu) and the Redis Streams scaler
(docs/2.15/scalers/redis-streams) pages of keda.sh. Written
here by hand, not copied from KEDA's CRD, and strict like an API server with a structural schema:
an unknown field is an error. Trigger `metadata` values are strings in KEDA (`map[string]string`),
so a number where KEDA wants "100" fails here as it would at `kubectl apply`.

`validate(doc)` raises `jsonschema.ValidationError`; `problems(doc)` also checks the documented
cross-field rules that a schema cannot say (idleReplicaCount < minReplicaCount <= maxReplicaCount,
no `fallback` with only CPU/memory triggers, which KEDA ignores).
"""

from __future__ import annotations

from typing import Any

import jsonschema

KEDA_VERSION = "2.15"

_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_HPA_POLICY = _object({"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                       "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}},
                      ("type", "value", "periodSeconds"))
_HPA_RULES = _object({"stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
                      "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
                      "policies": {"type": "array", "items": _HPA_POLICY}})

PROMETHEUS_METADATA = _object({
    "serverAddress": {"type": "string", "pattern": "^https?://"}, "query": _STR, "threshold": _STR,
    "activationThreshold": _STR, "queryParameters": _STR, "namespace": _STR, "customHeaders": _STR,
    "ignoreNullValues": {"enum": ["true", "false"]}, "unsafeSsl": {"enum": ["true", "false"]},
    "authModes": _STR,
}, ("serverAddress", "query", "threshold"))

CPU_METADATA = _object({"value": _STR, "containerName": _STR}, ("value",))

_BOOL_STR = {"enum": ["true", "false"]}
REDIS_STREAMS_METADATA = {
    **_object({"address": _STR, "host": _STR, "port": _STR, "usernameFromEnv": _STR, "passwordFromEnv": _STR,
               "stream": _STR, "consumerGroup": _STR, "pendingEntriesCount": _STR, "streamLength": _STR,
               "lagCount": _STR, "activationLagCount": _STR, "enableTLS": _BOOL_STR, "unsafeSsl": _BOOL_STR,
               "databaseIndex": _STR, "addressFromEnv": _STR, "hostFromEnv": _STR, "portFromEnv": _STR},
              ("stream",)),
    # "address: Required if host and port are not provided"
    "anyOf": [{"required": ["address"]}, {"required": ["addressFromEnv"]}, {"required": ["host"]},
              {"required": ["hostFromEnv"]}],
}

_TRIGGER_COMMON = {
    "type": _STR, "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "metadata": {"type": "object", "additionalProperties": _STR},
    "authenticationRef": _object({"name": _STR, "kind": {"enum": ["TriggerAuthentication",
                                                                  "ClusterTriggerAuthentication"]}}, ("name",)),
    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
    "useCachedMetrics": {"type": "boolean"},
}

TRIGGER = {
    **_object(_TRIGGER_COMMON, ("type", "metadata")),
    "allOf": [
        {"if": {"properties": {"type": {"const": "prometheus"}}},
         "then": {"properties": {"metadata": PROMETHEUS_METADATA,
                                 "metricType": {"enum": ["AverageValue", "Value"]}}}},
        {"if": {"properties": {"type": {"const": "redis-streams"}}},
         "then": {"properties": {"metadata": REDIS_STREAMS_METADATA, "metricType": {"enum": ["AverageValue", "Value"]}}}},
        {"if": {"properties": {"type": {"enum": ["cpu", "memory"]}}},
         "then": {"properties": {"metadata": CPU_METADATA, "metricType": {"enum": ["Utilization", "AverageValue"]}},
                  "required": ["metricType"]}},
    ],
}

SCALED_OBJECT = _object({
    "apiVersion": {"const": "keda.sh/v1alpha1"},
    "kind": {"const": "ScaledObject"},
    "metadata": {"type": "object", "required": ["name"],
                 "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"},
                                "namespace": _STR, "labels": {"type": "object", "additionalProperties": _STR},
                                "annotations": {"type": "object", "additionalProperties": _STR}}},
    "spec": _object({
        "scaleTargetRef": _object({"apiVersion": _STR, "kind": _STR, "name": _STR, "envSourceContainerName": _STR},
                                  ("name",)),
        "pollingInterval": _INT, "cooldownPeriod": _INT, "initialCooldownPeriod": _INT, "idleReplicaCount": _INT,
        "minReplicaCount": _INT, "maxReplicaCount": _INT,
        "fallback": _object({"failureThreshold": _INT, "replicas": _INT}, ("failureThreshold", "replicas")),
        "advanced": _object({
            "restoreToOriginalReplicaCount": {"type": "boolean"},
            "horizontalPodAutoscalerConfig": _object({"name": _STR, "behavior": _object(
                {"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES})}),
            "scalingModifiers": _object({"formula": _STR, "target": _STR, "activationTarget": _STR,
                                         "metricType": {"enum": ["AverageValue", "Value"]}},
                                        ("formula", "target")),
        }),
        "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
    }, ("scaleTargetRef", "triggers")),
}, ("apiVersion", "kind", "metadata", "spec"))


def validate(document: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` unless `document` is a ScaledObject KEDA 2.15 accepts."""
    jsonschema.validate(document, SCALED_OBJECT, cls=jsonschema.Draft7Validator)


def problems(document: dict[str, Any]) -> list[str]:
    """Schema errors plus the documented cross-field rules; empty when the ScaledObject is valid."""
    errors = [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
              for e in jsonschema.Draft7Validator(SCALED_OBJECT).iter_errors(document)]
    if errors:
        return errors
    spec = document["spec"]
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if low > high:
        errors.append(f"spec: minReplicaCount {low} > maxReplicaCount {high}")
    if "idleReplicaCount" in spec and spec["idleReplicaCount"] >= low:
        errors.append("spec: idleReplicaCount must be less than minReplicaCount")
    if "fallback" in spec and all(t["type"] in ("cpu", "memory") for t in spec["triggers"]):
        errors.append("spec.fallback: not supported with only cpu/memory triggers")
    names = [t["name"] for t in spec["triggers"] if "name" in t]
    if len(names) != len(set(names)):
        errors.append("spec.triggers: trigger names must be unique")
    return errors
