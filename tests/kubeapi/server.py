#!/usr/bin/python3
"""A Kubernetes API server stand-in for canary-bridge tests.

    /usr/bin/python3 tests/kubeapi/server.py --dir DIR [--groups traefik.io,traefik.containo.us]
                                             [--history N] [--bookmark-interval S] [--rsa]

Start-up: makes a CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) with the
openssl CLI, picks a random bearer token, binds HTTPS on 127.0.0.1:0 and writes into DIR:
ca.crt, server.crt, server.key, token, kubeconfig (context "test") and, LAST and atomically,
`port` (the readiness signal).  Runs until SIGTERM/SIGINT.

It serves the Traefik CRDs from tests/kubeapi/crds/ (traefik.io from the v3 file,
traefik.containo.us from the v2 file), plus namespaces, core and events.k8s.io events,
core services, discovery.k8s.io endpointslices, coordination.k8s.io leases, core pods with
their proxy subresource (forwarded over plain HTTP to status.podIP and the port the path
names, as the real one does; a test runs the pod's server on loopback), read-only
apiextensions.k8s.io CRDs and SelfSubjectAccessReview, and answers like a real kube-apiserver
(see /work/shared/reference/kube-apiserver-behaviour.md): Status bodies, optimistic
concurrency, patches, server-side apply, schema validation and pruning, label/field
selectors, watches with history and 410 Expired, dryRun.

A control API without auth lives under /_test/ on the same port (see README.md next to this
file): request log, fault injection, watch compaction, store dump.
"""

import argparse
import base64
import calendar
import collections
import copy
import email.utils
import http.server
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CRD_FILES = {
    "traefik.io": os.path.join(HERE, "crds", "traefik-v3-crds.yaml"),
    "traefik.containo.us": os.path.join(HERE, "crds", "traefik-v2-crds.yaml"),
}
VERSION_INFO = {
    "major": "1", "minor": "28", "gitVersion": "v1.28.0",
    "gitCommit": "855e7c48de7388eb330da0f8d9d2394ee818fb8d", "gitTreeState": "clean",
    "buildDate": "2023-08-15T10:15:54Z", "goVersion": "go1.20.7", "compiler": "gc",
    "platform": "linux/amd64",
}
CRUD_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
OPTIMISTIC_LOCK = ("the object has been modified; please apply your changes to the latest "
                   "version and try again")
PATCH_TYPES_CR = ["application/json-patch+json", "application/merge-patch+json",
                  "application/apply-patch+yaml"]
PATCH_TYPES_BUILTIN = PATCH_TYPES_CR[:2] + ["application/strategic-merge-patch+json",
                                            "application/apply-patch+yaml"]
REASONS = http.server.BaseHTTPRequestHandler.responses


def log(msg):
    sys.stderr.write("kubeapi %s %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dumps(obj, sort=True):
    return (json.dumps(obj, separators=(",", ":"), sort_keys=sort, ensure_ascii=False)
            + "\n").encode()


def jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def gofmt(v):
    """Format a bad value the way field.Error.ErrorBody does (%q for strings, %v else)."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, sort_keys=True)


def json_equal(a, b):
    """Equality of JSON values where true != 1 (Python says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------------
# Status bodies and errors

class ApiError(Exception):
    """An answer other than success: a Status body (or plain text) plus headers."""

    def __init__(self, code, body=None, headers=None, plain=None):
        super().__init__(code)
        self.code, self.body, self.headers, self.plain = code, body, headers or {}, plain


def status_body(code, reason, message, details=None):
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
          "message": message, "reason": reason}
    if details is not None:
        st["details"] = details
    st["code"] = code
    return st


def err(code, reason, message, details=None, headers=None):
    return ApiError(code, status_body(code, reason, message, details), headers)


def dets(name=None, group=None, kind=None, **extra):
    d = {k: v for k, v in (("name", name), ("group", group), ("kind", kind)) if v}
    d.update(extra)
    return d


def page_not_found():
    return ApiError(404, plain="404 page not found\n")


def bad_request(msg):
    return err(400, "BadRequest", msg)


def not_found(res, name):
    return err(404, "NotFound", '%s "%s" not found' % (res.qualified, name),
               dets(name, res.group, res.plural))


def already_exists(res, name):
    return err(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified, name),
               dets(name, res.group, res.plural))


def conflict(res, name, msg=OPTIMISTIC_LOCK):
    return err(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
               % (res.qualified, name, msg), dets(name, res.group, res.plural))


class FieldError:
    def __init__(self, field, reason, body):
        self.field, self.reason, self.body = field, reason, body

    def __str__(self):
        return "%s: %s" % (self.field, self.body)


def invalid(group_kind, group, kind, name, errors):
    """apierrors.NewInvalid: 422 with one cause per field."""
    causes = [{"reason": e.reason, "message": e.body, "field": e.field} for e in errors]
    agg = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    return err(422, "Invalid", '%s "%s" is invalid: %s' % (group_kind, name, agg),
               dets(name, group, kind, causes=causes))


def unsupported_media(types):
    return err(415, "UnsupportedMediaType",
               "the body of the request was in an unknown format - accepted media types "
               "include: " + ", ".join(types))


# --------------------------------------------------------------------------------------------
# Resources

class Resource:
    def __init__(self, group, version, plural, kind, namespaced=True, schema=None,
                 singular=None, short_names=(), categories=(), verbs=CRUD_VERBS, custom=False):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.schema, self.custom = namespaced, schema, custom
        self.singular = singular or kind.lower()
        self.short_names, self.categories, self.verbs = list(short_names), list(categories), verbs
        self.id = (group, plural)
        self.api_version = "%s/%s" % (group, version) if group else version
        self.list_kind = kind + "List"
        self.qualified = "%s.%s" % (plural, group) if group else plural
        self.group_kind = "%s.%s" % (kind, group) if group else kind

    def discovery(self):
        d = {"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
             "kind": self.kind, "verbs": self.verbs}
        if self.short_names:
            d["shortNames"] = self.short_names
        if self.categories:
            d["categories"] = self.categories
        return d


def load_crds(groups):
    """CRD objects for the served groups: traefik.io from v3, traefik.containo.us from v2."""
    crds = []
    for group in groups:
        with open(CRD_FILES[group]) as f:
            for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if doc and doc.get("kind") == "CustomResourceDefinition" \
                        and doc["spec"]["group"] == group:
                    crds.append(doc)
    return crds


def crd_resource(crd):
    spec, names = crd["spec"], crd["spec"]["names"]
    ver = next(v for v in spec["versions"] if v["name"] == "v1alpha1")
    return Resource(spec["group"], "v1alpha1", names["plural"], names["kind"],
                    namespaced=spec.get("scope") == "Namespaced",
                    schema=ver["schema"]["openAPIV3Schema"], singular=names.get("singular"),
                    short_names=names.get("shortNames", ()),
                    categories=names.get("categories", ()), custom=True)


BUILTINS = [
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=["ns"],
             verbs=["create", "delete", "get", "list", "patch", "update", "watch"]),
    Resource("", "v1", "events", "Event", short_names=["ev"]),
    Resource("", "v1", "services", "Service", short_names=["svc"], categories=["all"]),
    Resource("", "v1", "pods", "Pod", short_names=["po"], categories=["all"]),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Resource("events.k8s.io", "v1", "events", "Event", short_names=["ev"]),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
             "SelfSubjectAccessReview", namespaced=False, verbs=["create"]),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
             "CustomResourceDefinition", namespaced=False, short_names=["crd", "crds"],
             verbs=["get", "list", "watch"]),
]


# --------------------------------------------------------------------------------------------
# Structural schema: prune, default, validate (what apiextensions-apiserver does on writes)

def child(path, key):
    return "%s.%s" % (path, key) if path else key


class SchemaCheck:
    def __init__(self):
        self.errors, self.pruned = [], []

    def type_error(self, path, v, want):
        t = jtype(v)
        self.errors.append(FieldError(path, "FieldValueTypeInvalid",
                                      'Invalid value: "%s": %s in body must be of type %s: "%s"'
                                      % (t, path, want, t)))

    def invalid(self, path, v, detail):
        self.errors.append(FieldError(path, "FieldValueInvalid",
                                      "Invalid value: %s: %s" % (gofmt(v), detail)))

    def walk(self, v, s, path):
        if s.get("x-kubernetes-int-or-string"):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                self.type_error(path, v, "integer,string")
            return v
        t = s.get("type")
        if t == "integer" and isinstance(v, float) and v.is_integer():
            v = int(v)
        ok = {None: True, "object": isinstance(v, dict), "array": isinstance(v, list),
              "string": isinstance(v, str), "boolean": isinstance(v, bool),
              "integer": isinstance(v, int) and not isinstance(v, bool),
              "number": isinstance(v, (int, float)) and not isinstance(v, bool)}.get(t, True)
        if not ok:
            self.type_error(path, v, t)
            return v
        if "enum" in s and not any(json_equal(v, e) for e in s["enum"]):
            self.errors.append(FieldError(path, "FieldValueNotSupported",
                                          "Unsupported value: %s: supported values: %s"
                                          % (gofmt(v), ", ".join(gofmt(e) for e in s["enum"]))))
        if isinstance(v, dict):
            v = self.walk_object(v, s, path)
        elif isinstance(v, list):
            items = s.get("items")
            if isinstance(items, dict):
                v = [self.walk(x, items, "%s[%d]" % (path, i)) for i, x in enumerate(v)]
            if "maxItems" in s and len(v) > s["maxItems"]:
                self.errors.append(FieldError(path, "FieldValueTooMany",
                                              "Too many: %d: must have at most %d items"
                                              % (len(v), s["maxItems"])))
            if "minItems" in s and len(v) < s["minItems"]:
                self.invalid(path, v, "%s in body should have at least %d items"
                             % (path, s["minItems"]))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            for key, cmp, word in (("minimum", lambda a, b: a >= b, "greater than or equal to"),
                                   ("maximum", lambda a, b: a <= b, "less than or equal to")):
                if key in s:
                    excl = s.get("exclusive" + key.capitalize())
                    if not cmp(v, s[key]) or (excl and v == s[key]):
                        w = word.replace(" or equal to", "") if excl else word
                        self.invalid(path, v, "%s in body should be %s %s" % (path, w, s[key]))
        elif isinstance(v, str):
            if "maxLength" in s and len(v) > s["maxLength"]:
                self.errors.append(FieldError(path, "FieldValueTooLong",
                                              "Too long: may not be more than %d bytes"
                                              % s["maxLength"]))
            if "minLength" in s and len(v) < s["minLength"]:
                self.invalid(path, v, "%s in body should be at least %d chars long"
                             % (path, s["minLength"]))
            if "pattern" in s and not re.search(s["pattern"], v):
                self.invalid(path, v, "%s in body should match '%s'" % (path, s["pattern"]))
        self.cel(v, s, path)
        return v

    def walk_object(self, v, s, path):
        props = s.get("properties") or {}
        addl = s.get("additionalProperties")
        preserve = s.get("x-kubernetes-preserve-unknown-fields")
        out = {}
        for k, x in v.items():
            ps = props.get(k, addl if isinstance(addl, dict) else None)
            if x is None and ps is not None and not ps.get("nullable"):
                continue  # null on a non-nullable field is dropped, like the real server
            if ps is not None:
                out[k] = self.walk(x, ps, child(path, k))
            elif addl is True or preserve:
                out[k] = x
            else:
                self.pruned.append(child(path, k))
        for k, ps in props.items():
            if k not in out and "default" in ps:
                out[k] = copy.deepcopy(ps["default"])
        for r in s.get("required") or ():
            if r not in out:
                self.errors.append(FieldError(child(path, r), "FieldValueRequired",
                                              "Required value"))
        return out

    def cel(self, v, s, path):
        """The only CEL rule shapes in the Traefik CRDs; other rules are not enforced."""
        for rule in s.get("x-kubernetes-validations") or ():
            r = rule.get("rule", "")
            m = re.fullmatch(r"self\.startsWith\('([^']*)'\)", r)
            m2 = re.fullmatch(r"!has\(self\.(\w+)\) \|\| !has\(self\.(\w+)\)", r)
            if m:
                ok = not isinstance(v, str) or v.startswith(m.group(1))
            elif m2:
                ok = not (isinstance(v, dict) and m2.group(1) in v and m2.group(2) in v)
            else:
                continue
            if not ok:
                self.errors.append(FieldError(path, "FieldValueInvalid", 'Invalid value: "%s": %s'
                                              % (jtype(v), rule.get("message")
                                                 or "failed rule: " + r)))


DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                 "(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
MSG_QNAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
             "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
             "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, "
                   "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                   "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                   "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def key_errors(field, key):
    parts = key.split("/")
    if len(parts) > 2 or not parts[-1]:
        return [FieldError(field, "FieldValueInvalid", "Invalid value: %s: %s"
                           % (gofmt(key), MSG_QNAME))]
    out = []
    if len(parts) == 2:
        pre = parts[0]
        if not pre or len(pre) > 253 or not DNS1123_SUBDOMAIN.fullmatch(pre):
            out.append(FieldError(field, "FieldValueInvalid", "Invalid value: %s: prefix part %s"
                                  % (gofmt(key), MSG_SUBDOMAIN)))
    name = parts[-1]
    if len(name) > 63:
        out.append(FieldError(field, "FieldValueInvalid", "Invalid value: %s: name part must be "
                              "no more than 63 characters" % gofmt(key)))
    elif not QUALIFIED_NAME.fullmatch(name):
        out.append(FieldError(field, "FieldValueInvalid", "Invalid value: %s: %s"
                              % (gofmt(key), MSG_QNAME)))
    return out


def metadata_errors(meta):
    errs = []
    name = meta.get("name", "")
    if name and (len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name)):
        errs.append(FieldError("metadata.name", "FieldValueInvalid", "Invalid value: %s: %s"
                               % (gofmt(name), MSG_SUBDOMAIN)))
    for k, v in (meta.get("labels") or {}).items():
        errs += key_errors("metadata.labels", k)
        if len(v) > 63:
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", "Invalid value: %s: "
                                   "must be no more than 63 characters" % gofmt(v)))
        elif not LABEL_VALUE.fullmatch(v):
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", "Invalid value: %s: %s"
                                   % (gofmt(v), MSG_LABEL_VALUE)))
    total = 0
    for k, v in (meta.get("annotations") or {}).items():
        errs += [FieldError("metadata.annotations", e.reason, e.body)
                 for e in key_errors("metadata.annotations", k.lower())]
        total += len(k) + len(v)
    if total > 256 * 1024:
        errs.append(FieldError("metadata.annotations", "FieldValueTooLong",
                               "Too long: must have at most 262144 bytes"))
    return errs


# --------------------------------------------------------------------------------------------
# Selectors

class LabelSelector:
    """k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b); comma means AND."""
    TERM = re.compile(r"\s*(?:(!)\s*([\w./-]+)|([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|"
                      r"\s(in|notin)\s*\(([^)]*)\))?)\s*(?:,|$)")

    def __init__(self, text):
        self.reqs = []
        text = text or ""
        pos = 0
        while pos < len(text):
            m = self.TERM.match(text, pos)
            if not m or m.end() == pos:
                raise bad_request("unable to parse requirement: found '%s', expected: "
                                  "identifier" % text[pos:])
            pos = m.end()
            if m.group(1):
                self.reqs.append(("!", m.group(2), None))
            elif m.group(4):
                self.reqs.append(("!=" if m.group(4) == "!=" else "=", m.group(3), m.group(5)))
            elif m.group(6):
                vals = {x.strip() for x in m.group(7).split(",")}
                self.reqs.append((m.group(6), m.group(3), vals))
            else:
                self.reqs.append(("exists", m.group(3), None))

    def matches(self, labels):
        labels = labels or {}
        for op, k, v in self.reqs:
            ok = {"=": lambda: labels.get(k) == v, "!=": lambda: labels.get(k) != v,
                  "exists": lambda: k in labels, "!": lambda: k not in labels,
                  "in": lambda: labels.get(k) in v,
                  "notin": lambda: labels.get(k) not in v}[op]()
            if not ok:
                return False
        return True


class FieldSelector:
    FIELDS = ("metadata.name", "metadata.namespace")

    def __init__(self, text):
        self.reqs = []
        for term in filter(None, (t.strip() for t in (text or "").split(","))):
            m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)
            if not m:
                raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\''
                                  % (text, term))
            if m.group(1) not in self.FIELDS:
                raise bad_request('field label not supported: %s' % m.group(1))
            self.reqs.append((m.group(1).split(".")[1], m.group(2) != "!=", m.group(3)))

    def matches(self, obj):
        meta = obj.get("metadata", {})
        return all((meta.get(f, "") == v) == eq for f, eq, v in self.reqs)


# --------------------------------------------------------------------------------------------
# Patches

class PatchFailed(Exception):
    pass


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed("JSON pointer must start with '/': %s" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk_to(doc, tokens, op, path):
    node = doc
    for t in tokens:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
            node = node[int(t)]
        else:
            raise PatchFailed("%s operation does not apply: doc is missing path: \"%s\": "
                              "missing value" % (op, path))
    return node


def _get(doc, path, op):
    toks = _pointer(path)
    return _walk_to(doc, toks, op, path)


def _remove(doc, path, op):
    toks = _pointer(path)
    if not toks:
        raise PatchFailed("%s operation does not apply: cannot remove the root" % op)
    parent = _walk_to(doc, toks[:-1], op, path)
    last = toks[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchFailed("%s operation does not apply: doc is missing key: %s: missing value"
                      % (op, path))


def _add(doc, path, value, op, replace=False):
    toks = _pointer(path)
    if not toks:
        return value
    parent = _walk_to(doc, toks[:-1], op, path)
    last = toks[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchFailed("replace operation does not apply: doc is missing key: %s: "
                              "missing value" % path)
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise PatchFailed("%s operation does not apply: doc is missing path: %s: "
                              "missing value" % (op, path))
    else:
        raise PatchFailed("%s operation does not apply: doc is missing path: %s" % (op, path))
    return doc


def json_patch(doc, ops):
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for o in ops:
        if not isinstance(o, dict) or "op" not in o or "path" not in o:
            raise PatchFailed("Unexpected kind: %s" % (o.get("op") if isinstance(o, dict) else o))
        op, path = o["op"], o["path"]
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(o.get("value")), op)
        elif op == "remove":
            _remove(doc, path, op)
        elif op == "replace":
            if path == "":
                doc = copy.deepcopy(o.get("value"))
            else:
                _add(doc, path, copy.deepcopy(o.get("value")), op, replace=True)
        elif op == "move":
            v = _remove(doc, o.get("from", ""), op)
            doc = _add(doc, path, v, op)
        elif op == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, o.get("from", ""), op)), op)
        elif op == "test":
            try:
                cur = _get(doc, path, op)
            except PatchFailed:
                raise PatchFailed("testing value %s failed: test failed" % path)
            if not json_equal(cur, o.get("value")):
                raise PatchFailed("testing value %s failed: test failed" % path)
        else:
            raise PatchFailed("Unexpected kind: %s" % op)
    return doc


# --------------------------------------------------------------------------------------------
# Field ownership (managedFields) for server-side apply.  Lists are atomic (no list-type
# markers in the Traefik CRDs), maps are granular.  A path is a tuple of keys.

MISSING = object()


def field_paths(obj):
    out = set()
    meta = obj.get("metadata") or {}
    for k in ("labels", "annotations"):
        for lk in meta.get(k) or {}:
            out.add(("metadata", k, lk))
    for k in ("finalizers", "ownerReferences"):
        if meta.get(k):
            out.add(("metadata", k))

    def walk(v, p):
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(x, p + (k,))
        else:
            out.add(p)
    for k, v in obj.items():
        if k not in ("apiVersion", "kind", "metadata"):
            walk(v, (k,))
    return out


def get_path(obj, p):
    for k in p:
        if not isinstance(obj, dict) or k not in obj:
            return MISSING
        obj = obj[k]
    return obj


def del_path(obj, p):
    chain = [obj]
    for k in p[:-1]:
        nxt = chain[-1].get(k) if isinstance(chain[-1], dict) else None
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    chain[-1].pop(p[-1], None)
    for i in range(len(chain) - 1, 0, -1):   # drop maps left empty
        if not chain[i]:
            chain[i - 1].pop(p[i - 1], None)


def overlaps(p, q):
    n = min(len(p), len(q))
    return p[:n] == q[:n]


def deep_merge(base, over):
    """Apply semantics for maps: recurse; lists and scalars replace."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(base.get(k), v)
    return out


def fields_tree(paths):
    root = {}
    for p in sorted(paths):
        node = root
        for k in p:
            node = node.setdefault("f:" + k, {})
    return root


# --------------------------------------------------------------------------------------------
# The store

Event = collections.namedtuple("Event", "rv type res ns obj prev")


class Store:
    def __init__(self, history):
        self.cond = threading.Condition(threading.RLock())
        self.rv = 1
        self.objs = collections.defaultdict(dict)    # res.id -> {(ns, name): obj}
        self.owners = {}                             # (res.id, ns, name) -> [[mgr, op, set, t]]
        self.history = collections.deque(maxlen=max(1, history))
        self.history_start = 1                       # every event with rv > this is kept
        self.epoch = 0                               # bumped to end all open watches
        self.bookmark_seq = 0                        # bumped to ask watches for a BOOKMARK
        self.stopping = False
        self.watches = {}                            # id -> description of open watches

    def commit(self, res, ns, name, etype, obj, prev):
        """Persist one write under the lock: new RV, history event, wake watchers."""
        self.rv += 1
        rv = str(self.rv)
        key = (ns, name)
        if etype == "DELETED":
            obj = copy.deepcopy(prev)
            obj["metadata"]["resourceVersion"] = rv
            self.objs[res.id].pop(key, None)
            self.owners.pop((res.id, ns, name), None)
        else:
            obj["metadata"]["resourceVersion"] = rv
            self.objs[res.id][key] = obj
        if len(self.history) == self.history.maxlen:
            self.history_start = self.history[0].rv
        self.history.append(Event(self.rv, etype, res.id, ns, obj, prev))
        self.cond.notify_all()
        return obj

    def events_since(self, rv, res_id):
        out = []
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.res == res_id:
                out.append(ev)
        out.reverse()
        return out

    def objects_at(self, res_id, rv):
        """{(ns, name): obj} of one resource as it was at resourceVersion rv (lock held),
        rebuilt from the history by undoing the later events; None when the history no
        longer reaches back that far."""
        if rv < self.history_start:
            return None
        objs = dict(self.objs[res_id])
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.res != res_id:
                continue
            key = (ev.ns, ev.obj["metadata"]["name"])
            if ev.type == "ADDED":
                objs.pop(key, None)
            else:                       # MODIFIED or DELETED: back to the previous object
                objs[key] = ev.prev
        return objs

    def compact(self):
        with self.cond:
            self.history.clear()
            self.history_start = self.rv
            self.epoch += 1
            self.cond.notify_all()

    def close_watches(self):
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()


# --------------------------------------------------------------------------------------------
# API semantics

class Request:
    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.query = query
        self.ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self.accept = headers.get("Accept") or ""
        self.user_agent = headers.get("User-Agent") or ""
        self.token = None           # the bearer token, once authenticated

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[-1] if v else default


class Response:
    def __init__(self, code, body=None, headers=None, sort=True, watch=None):
        self.code, self.body, self.headers, self.sort, self.watch = code, body, headers or {}, \
            sort, watch


class RequestInfo:
    """Like k8s RequestInfoFactory: derived from the URL only (used for authz messages)."""

    def __init__(self, method, path, query):
        self.resource_request = False
        self.group = self.version = self.ns = self.resource = self.name = self.sub = ""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 3:
            self.group, self.version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            self.group, self.version, rest = parts[1], parts[2], parts[3:]
        else:
            return
        self.resource_request = True
        if rest[0] == "namespaces" and len(rest) >= 3:
            self.ns, rest = rest[1], rest[2:]
        self.resource = rest[0]
        self.name = rest[1] if len(rest) > 1 else ""
        self.sub = "/".join(rest[2:])
        if self.resource == "namespaces" and self.name and not self.ns:
            self.ns = self.name
        watch = (query.get("watch") or [""])[-1] in ("1", "true", "True")
        self.verb = {"GET": "get" if self.name else ("watch" if watch else "list"),
                     "POST": "create", "PUT": "update", "PATCH": "patch",
                     "DELETE": "delete" if self.name else "deletecollection"}.get(method, "get")


class Api:
    def __init__(self, groups, history, tokens, bookmark_interval):
        self.tokens = tokens
        self.rbac = {}               # token -> RBAC-like rules; a token without may do all
        self.bookmark_interval = bookmark_interval
        self.store = Store(history)
        self.crds = load_crds(groups)
        self.resources = {}          # (group, version) -> {plural: Resource}
        for r in BUILTINS + [crd_resource(c) for c in self.crds]:
            self.resources.setdefault((r.group, r.version), {})[r.plural] = r
        self.server_address = ""
        self._seed()

    def res(self, group, plural, version=None):
        for (g, v), rs in self.resources.items():
            if g == group and (version is None or v == version) and plural in rs:
                return rs[plural]
        return None

    def _seed(self):
        ns_res = self.res("", "namespaces")
        for n in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.objs[ns_res.id][("", n)] = self._new_meta(ns_res, "", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        crd_res = self.res("apiextensions.k8s.io", "customresourcedefinitions")
        for c in self.crds:
            obj = copy.deepcopy(c)
            names = obj["spec"]["names"]
            obj["status"] = {
                "acceptedNames": names, "storedVersions": ["v1alpha1"],
                "conditions": [{"type": t, "status": "True", "reason": r, "message": m,
                                "lastTransitionTime": now_rfc3339()} for t, r, m in
                               (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                ("Established", "InitialNamesAccepted",
                                 "the initial names have been accepted"))]}
            self.store.objs[crd_res.id][("", obj["metadata"]["name"])] = \
                self._new_meta(crd_res, "", obj)

    def _new_meta(self, res, ns, obj):
        m = obj.setdefault("metadata", {})
        m.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(),
                 resourceVersion=str(self.store.rv))
        if res.namespaced:
            m["namespace"] = ns
        return obj

    # ---- entry point
    def handle(self, req):
        user = self.authenticate(req)
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", {"Content-Type": "text/plain; charset=utf-8"})
        if path == "/version":
            return Response(200, VERSION_INFO, sort=False)
        info = RequestInfo(req.method, path, req.query)
        if user is None:
            raise self.forbidden(info, path)
        if not info.resource_request:
            if path == "/openapi/v2":
                # kubectl apply needs this to exist: an empty protobuf message is a valid,
                # empty openapi_v2.Document (so kubectl finds no schema and uses merge patch).
                return Response(200, b"", {"Content-Type": "application/octet-stream"})
            return self.discovery(path)
        if req.method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise err(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested resource")
        rs = self.resources.get((info.group, info.version))
        res = rs and rs.get(info.resource)
        if res and res.plural == "pods" and info.ns and info.name and \
                info.sub.split("/")[0] == "proxy":
            return self.pod_proxy(req, info, path, user)
        if not res or info.sub or (info.ns and not res.namespaced and
                                   info.resource != "namespaces"):
            raise page_not_found()
        if res.plural == "namespaces":
            info.ns = ""
        if info.verb not in res.verbs:
            raise err(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested resource")
        if res.plural != "selfsubjectaccessreviews" and \
                not self.authorized(req, info.verb, info.group, info.resource, info.ns):
            raise self.forbidden(info, path, user)
        if res.namespaced and not info.ns and info.verb not in ("list", "watch"):
            raise err(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested resource")
        if info.verb in ("create", "update", "patch", "delete", "deletecollection"):
            dry = req.q("dryRun")
            if dry not in (None, "All"):
                raise bad_request("Invalid dryRun value: %s" % dry)
        handler = getattr(self, "do_" + info.verb)
        return handler(req, res, info.ns, info.name, user)

    def pod_proxy(self, req, info, path, user):
        """GET /api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/REST: REST (and the query) from
        http://<status.podIP>:PORT, answered as the pod answered (502 when it does not)."""
        if not self.authorized(req, "get", "", "pods/proxy", info.ns):
            raise self.forbidden(info, path, user)
        name, _, port = info.name.partition(":")
        pod = self.store.objs[self.res("", "pods").id].get((info.ns, name))
        if pod is None:
            raise err(404, "NotFound", 'pods "%s" not found' % name,
                      dets(name, "", "pods"))
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise err(400, "BadRequest", "address not allowed")
        rest = path.split("/proxy", 1)[1] or "/"
        query = urllib.parse.urlencode([(k, v) for k, vs in req.query.items() for v in vs])
        url = "http://%s:%s%s%s" % (ip, port or "80", rest, "?" + query if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                code, body, ctype = r.status, r.read(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            code, body, ctype = e.code, e.read(), e.headers.get("Content-Type")
        except OSError as e:
            raise err(502, "ServiceUnavailable", "error trying to reach service: %s" % e)
        return Response(code, body, {"Content-Type": ctype or "text/plain"})

    def authenticate(self, req):
        auth = req.headers.get("Authorization")
        if not auth:
            return None   # anonymous
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() != "bearer" or tok.strip() not in self.tokens:
            raise err(401, "Unauthorized", "Unauthorized")
        req.token = tok.strip()
        return "test-user"

    def forbidden(self, info, path, user="system:anonymous"):
        if not info.resource_request:
            return err(403, "Forbidden", 'forbidden: User "%s" cannot get path '
                       '"%s"' % (user, path), {})
        q = "%s.%s" % (info.resource, info.group) if info.group else info.resource
        where = ('in the namespace "%s"' % info.ns) if info.ns else "at the cluster scope"
        what = '%s "%s"' % (q, info.name) if info.name else q
        return err(403, "Forbidden", '%s is forbidden: User "%s" cannot %s '
                   'resource "%s" in API group "%s" %s' % (what, user, info.verb, info.resource,
                                                           info.group, where),
                   dets(info.name, info.group, info.resource))

    # ---- authorization (POST /_test/rbac)
    def authorized(self, req, verb, group, resource, ns):
        """RBAC's answer for the request's token from the rules set with /_test/rbac (a token
        without rules may do everything).  A rule is {"verbs", "apiGroups", "resources"[,
        "namespaces"]}, "*" matching any; without "namespaces" it is a ClusterRole bound
        cluster-wide, with them a Role bound in each of those namespaces (which never grants
        a request across all namespaces)."""
        rules = self.rbac.get(req.token)
        if rules is None:
            return True

        def has(values, v):
            return "*" in values or v in values
        return any(has(r.get("verbs", []), verb) and has(r.get("apiGroups", []), group) and
                   has(r.get("resources", []), resource) and
                   (r.get("namespaces") is None or (ns and ns in r["namespaces"]))
                   for r in rules)

    def access_review(self, req, body):
        """SelfSubjectAccessReview: the rules' answer for spec.resourceAttributes."""
        body = body if isinstance(body, dict) else {}
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]    # as RBAC names it: pods/proxy
        allowed = self.authorized(req, attrs.get("verb", ""), attrs.get("group", ""),
                                  resource, attrs.get("namespace", ""))
        body["status"] = {"allowed": allowed}
        if allowed:
            body["status"]["reason"] = (
                "kubeapi test server allows all" if req.token not in self.rbac
                else "allowed by the test server's rules")
        body.setdefault("metadata", {})["creationTimestamp"] = None
        return body

    # ---- discovery
    def discovery(self, path):
        groups = collections.OrderedDict()
        for (g, v) in self.resources:
            if g:
                groups.setdefault(g, []).append(v)

        def group_doc(g):
            vs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in groups[g]]
            return {"name": g, "versions": vs, "preferredVersion": vs[0]}
        if path == "/api":
            return Response(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": self.server_address}]}, sort=False)
        if path == "/apis":
            return Response(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [group_doc(g) for g in groups]}, sort=False)
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
            return Response(200, dict(kind="APIGroup", apiVersion="v1", **group_doc(parts[1])),
                            sort=False)
        gv = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else \
            (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else None
        if gv in self.resources:
            return Response(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": "/".join(x for x in gv if x),
                                  "resources": [r.discovery()
                                                for r in self.resources[gv].values()]},
                            sort=False)
        raise page_not_found()

    # ---- reads
    def _visible(self, res, ns, req, objs=None):
        ls = LabelSelector(req.q("labelSelector"))
        fs = FieldSelector(req.q("fieldSelector"))
        objs = self.store.objs[res.id] if objs is None else objs
        items = [o for (ons, _), o in sorted(objs.items())
                 if (not ns or ons == ns) and ls.matches(o["metadata"].get("labels"))
                 and fs.matches(o)]
        return items, ls, fs

    def do_get(self, req, res, ns, name, user):
        with self.store.cond:
            obj = self.store.objs[res.id].get((ns, name))
        if obj is None:
            raise not_found(res, name)
        if "as=Table" in req.accept:
            return Response(200, self.table([obj], obj["metadata"]["resourceVersion"], req))
        return Response(200, obj)

    def do_list(self, req, res, ns, name, user):
        with self.store.cond:
            items, _, _ = self._visible(res, ns, req)
            rv = str(self.store.rv)
        cont, limit = req.q("continue"), req.q("limit")
        meta = {"resourceVersion": rv}
        if cont:
            try:
                tok = json.loads(base64.b64decode(cont))
                rv, start = tok["rv"], tuple(tok["start"])
            except Exception:
                # The real server words the cause as Go's decoders do; the prefixes match.
                raise bad_request("invalid continue token: continue key is not valid: "
                                  "incorrect encoded start resourceVersion (version "
                                  "meta.k8s.io/v1)")
            meta["resourceVersion"] = rv
            # Like the real server, the next pages show the list as it was at the first
            # page's resourceVersion, not what was written since.
            with self.store.cond:
                then = self.store.objects_at(res.id, int(rv))
                if then is None:
                    raise err(410, "Expired", "The provided continue parameter is too old to "
                              "display a consistent list result. You can start a new list "
                              "without the continue parameter.")
                items, _, _ = self._visible(res, ns, req, then)
            items = [o for o in items if (o["metadata"].get("namespace", ""),
                                          o["metadata"]["name"]) > start]
        if limit and limit.isdigit() and 0 < int(limit) < len(items):
            last = items[int(limit) - 1]["metadata"]
            meta["continue"] = base64.b64encode(json.dumps(
                {"rv": meta["resourceVersion"],
                 "start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - int(limit)
            items = items[:int(limit)]
        if "as=Table" in req.accept:
            return Response(200, self.table(items, meta["resourceVersion"], req))
        return Response(200, {"apiVersion": res.api_version, "kind": res.list_kind,
                              "metadata": meta, "items": items})

    def table(self, objs, rv, req):
        include = req.q("includeObject", "Metadata")
        rows = []
        for o in objs:
            row = {"cells": [o["metadata"]["name"],
                             human_age(o["metadata"].get("creationTimestamp"))]}
            if include == "Object":
                row["object"] = o
            elif include == "Metadata":
                row["object"] = {"kind": "PartialObjectMetadata",
                                 "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "priority": 0,
                     "description": "Name must be unique within a namespace."},
                    {"name": "Age", "type": "date", "format": "", "priority": 0,
                     "description": "CreationTimestamp is a timestamp representing the server "
                                    "time when this object was created."}],
                "rows": rows}

    def do_watch(self, req, res, ns, name, user):
        ls = LabelSelector(req.q("labelSelector"))
        fs = FieldSelector(req.q("fieldSelector"))
        rv_param = req.q("resourceVersion", "")
        timeout = req.q("timeoutSeconds")
        w = {"res": res, "ns": ns, "ls": ls, "fs": fs,
             "timeout": float(timeout) if timeout else 1800.0,
             "bookmarks": req.q("allowWatchBookmarks") in ("1", "true", "True"),
             "initial": [], "initial_end": False, "expired": None}
        if not re.fullmatch(r"\d*", rv_param):
            raise bad_request('resourceVersion: Invalid value: "%s": must be a number'
                              % rv_param)
        with self.store.cond:
            w["epoch"] = self.store.epoch
            w["bookmark_seq"] = self.store.bookmark_seq
            send_initial = req.q("sendInitialEvents") in ("1", "true", "True")
            if rv_param in ("", "0") or send_initial:
                # Like the real server for RV unset/"0": synthetic ADDED events for the
                # current objects first, then live events.
                w["initial"] = [o for (ons, _), o in sorted(self.store.objs[res.id].items())
                                if (not ns or ons == ns) and ls.matches(
                                    o["metadata"].get("labels")) and fs.matches(o)]
                w["start"] = self.store.rv
                w["initial_end"] = send_initial and w["bookmarks"]
            else:
                w["start"] = int(rv_param)
                if w["start"] < self.store.history_start:
                    w["expired"] = expired_status(w["start"], self.store.history_start)
        return Response(200, watch=w)

    # ---- writes
    def manager(self, req, apply=False):
        fm = req.q("fieldManager")
        if fm is None and not apply:
            fm = req.user_agent.split("/")[0] or "unknown"
        return fm

    def parse_body(self, req, res):
        if req.ctype in ("application/yaml", "application/apply-patch+yaml"):
            check_go_yaml(req.body)
            try:
                obj = yaml.safe_load(req.body.decode("utf-8")) if req.body else None
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise bad_request("error decoding YAML: %s" % str(e).replace("\n", " "))
        elif req.ctype in ("application/json", "", "*/*") or req.ctype.endswith("+json"):
            try:
                obj = json.loads(req.body.decode("utf-8")) if req.body else None
            except (ValueError, UnicodeDecodeError) as e:
                raise bad_request("couldn't get version/kind; json parse error: %s" % e)
        else:
            raise unsupported_media(["application/json", "application/yaml"])
        return obj

    def decode_object(self, req, res, obj, ns, name=None):
        """Checks the shape of a full object sent with POST/PUT/apply."""
        if not isinstance(obj, dict):
            raise bad_request("the object provided is unrecognized (not a JSON object)")
        if not obj.get("kind"):
            raise bad_request("Object 'Kind' is missing in '%s'"
                              % json.dumps(obj, separators=(",", ":")))
        if obj.get("apiVersion") != res.api_version or obj.get("kind") != res.kind:
            raise bad_request("the API version in the data (%s) does not match the expected "
                              "API version (%s)" % (obj.get("apiVersion"), res.api_version)
                              if obj.get("apiVersion") != res.api_version else
                              "the kind in the data (%s) does not match the expected kind (%s)"
                              % (obj.get("kind"), res.kind))
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("json: cannot unmarshal %s into Go struct field Object.metadata "
                              "of type v1.ObjectMeta" % jtype(meta))
        for k in ("labels", "annotations"):
            m = meta.get(k)
            if m is not None and (not isinstance(m, dict) or
                                  not all(isinstance(v, str) for v in m.values())):
                raise bad_request("json: cannot unmarshal into Go struct field "
                                  "ObjectMeta.metadata.%s of type map[string]string" % k)
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
        return obj

    def build(self, req, res, ns, name, body, old):
        """New stored object from a client body: server metadata, pruning, defaults,
        validation.  Returns (obj, warnings)."""
        mi = body.get("metadata") or {}
        meta = {"name": name}
        if res.namespaced:
            meta["namespace"] = ns
        for k in ("generateName", "labels", "annotations", "finalizers", "ownerReferences"):
            if mi.get(k):
                meta[k] = copy.deepcopy(mi[k])
        errors = metadata_errors(meta)
        rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
        pruned = []
        if res.schema:
            chk = SchemaCheck()
            s = dict(res.schema)
            s["properties"] = {k: v for k, v in (s.get("properties") or {}).items()
                               if k not in ("apiVersion", "kind", "metadata")}
            s["required"] = [r for r in s.get("required") or () if r != "metadata"]
            rest = chk.walk_object(rest, s, "")
            errors += chk.errors
            pruned = chk.pruned
        validation = req.q("fieldValidation", "Warn")
        if pruned and validation == "Strict":
            raise bad_request('%s in version "%s" cannot be handled as a %s: strict decoding '
                              'error: %s' % (res.kind, res.version, res.kind, ", ".join(
                                  'unknown field "%s"' % p for p in pruned)))
        if errors:
            raise invalid(res.group_kind, res.group, res.kind, name, errors)
        obj = {"apiVersion": res.api_version, "kind": res.kind, "metadata": meta}
        obj.update(rest)
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            if res.custom:
                meta["generation"] = 1
        else:
            om = old["metadata"]
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "resourceVersion"):
                if k in om:
                    meta[k] = om[k]
            if res.custom and strip_meta(old) != strip_meta(obj):
                meta["generation"] = om.get("generation", 0) + 1
        warnings = ['unknown field "%s"' % p for p in pruned] if validation == "Warn" else []
        return obj, warnings

    def do_create(self, req, res, ns, name, user):
        body = self.parse_body(req, res)
        if res.plural == "selfsubjectaccessreviews":
            return Response(201, self.access_review(req, body))
        body = self.decode_object(req, res, body, ns)
        mi = body["metadata"]
        name = mi.get("name") or ""
        if not name and mi.get("generateName"):
            name = mi["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789")
                                                for _ in range(5))
        if not name:
            raise invalid(res.group_kind, res.group, res.kind, "", [FieldError(
                "metadata.name", "FieldValueRequired",
                "Required value: name or generateName is required")])
        mgr = self.manager(req)
        with self.store.cond:
            self.namespace_lifecycle(res, ns)
            obj, warnings = self.build(req, res, ns, name, body, None)
            if mi.get("resourceVersion") and req.q("dryRun") != "All":   # etcd3 store.Create
                msg = "resourceVersion should not be set on objects to be created"
                raise err(500, "InternalError", "Internal error occurred: " + msg,
                          {"causes": [{"message": msg}]})
            if (ns, name) in self.store.objs[res.id]:
                raise already_exists(res, name)
            owners = [[mgr, "Update", field_paths(obj), now_rfc3339()]]
            obj = self.persist(req, res, ns, name, "ADDED", obj, None, owners)
        return Response(201, obj, warning_headers(warnings))

    def namespace_lifecycle(self, res, ns):
        """The NamespaceLifecycle admission plugin: a create in a namespace that does not
        exist is 404 NotFound about the namespace (before any schema validation)."""
        if res.namespaced and ("", ns) not in self.store.objs[self.res("", "namespaces").id]:
            raise err(404, "NotFound", 'namespaces "%s" not found' % ns,
                      dets(ns, None, "namespaces"))

    def persist(self, req, res, ns, name, etype, obj, prev, owners):
        """Commit (or, for dryRun=All, only pretend to)."""
        if owners is not None:
            # Empty entries go; the rest in the server's order: operation, time, manager.
            owners = sorted((e for e in owners if e[2]), key=lambda e: (e[1], e[3], e[0]))
            obj["metadata"]["managedFields"] = [
                {"apiVersion": res.api_version, "fieldsType": "FieldsV1",
                 "fieldsV1": fields_tree(p), "manager": m, "operation": op, "time": t}
                for m, op, p, t in owners]
        if req.q("dryRun") == "All":
            if prev is None:
                obj["metadata"].pop("resourceVersion", None)
            return obj
        if owners is not None:
            self.store.owners[(res.id, ns, name)] = owners
        if etype == "MODIFIED" and obj["metadata"].get("deletionTimestamp") and \
                not obj["metadata"].get("finalizers"):
            return self.store.commit(res, ns, name, "DELETED", None, obj)
        return self.store.commit(res, ns, name, etype, obj, prev)

    def update(self, req, res, ns, name, body, mgr, rv_required, warnings=(), apply=None):
        """The store's Update: RV checks, validation, no-op detection, ownership."""
        cur = self.store.objs[res.id].get((ns, name))
        if cur is None:
            raise not_found(res, name)
        mi = body.get("metadata") or {}
        want = mi.get("resourceVersion") or ""
        if not isinstance(want, str):
            raise bad_request("json: cannot unmarshal %s into Go struct field "
                              "ObjectMeta.metadata.resourceVersion of type string" % jtype(want))
        if want:
            if not want.isdigit():
                raise bad_request('metadata.resourceVersion: Invalid value: "%s": must be a '
                                  'number' % want)
            if want != cur["metadata"]["resourceVersion"]:
                raise conflict(res, name)
        elif rv_required and res.custom:
            raise invalid(res.qualified, res.group, res.plural, name, [FieldError(
                "metadata.resourceVersion", "FieldValueInvalid",
                "Invalid value: 0: must be specified for an update")])
        if mi.get("uid") and mi["uid"] != cur["metadata"]["uid"]:
            raise conflict(res, name, "Precondition failed: UID in precondition: %s, UID in "
                           "object meta: %s" % (mi["uid"], cur["metadata"]["uid"]))
        obj, w = self.build(req, res, ns, name, body, cur)
        warnings = list(warnings) + w
        if strip_meta(cur, keep_meta=True) == strip_meta(obj, keep_meta=True) and apply is None:
            return Response(200, cur, warning_headers(warnings))
        owners = [[m, op, set(p), t] for m, op, p, t in self.store.owners.get(
            (res.id, ns, name), [])]
        if apply is not None:
            owners = apply(owners, obj)
        else:
            owners = update_owners(owners, cur, obj, mgr)
        if strip_meta(cur, keep_meta=True) == strip_meta(obj, keep_meta=True) and \
                [e[:3] for e in owners] == [e[:3] for e in self.store.owners.get(
                    (res.id, ns, name), [])]:
            return Response(200, cur, warning_headers(warnings))
        obj = self.persist(req, res, ns, name, "MODIFIED", obj, cur, owners)
        return Response(200, obj, warning_headers(warnings))

    def do_update(self, req, res, ns, name, user):
        body = self.decode_object(req, res, self.parse_body(req, res), ns)
        if body["metadata"].get("name") != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL "
                              "(%s)" % (body["metadata"].get("name", ""), name))
        with self.store.cond:
            return self.update(req, res, ns, name, body, self.manager(req), rv_required=True)

    def do_patch(self, req, res, ns, name, user):
        types = PATCH_TYPES_CR if res.custom else PATCH_TYPES_BUILTIN
        if req.ctype not in types:
            raise unsupported_media(types)
        apply = req.ctype == "application/apply-patch+yaml"
        if req.q("force") is not None and not apply:
            raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "PatchOptions", "", [
                FieldError("force", "FieldValueForbidden",
                           "Forbidden: may not be specified for non-apply patch")])
        mgr = self.manager(req, apply=apply)
        if apply and not mgr:
            raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "PatchOptions", "", [
                FieldError("fieldManager", "FieldValueRequired",
                           "Required value: is required for apply patch")])
        if mgr is not None and (len(mgr) > 128 or not mgr.isprintable()):
            raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "PatchOptions", "", [
                FieldError("fieldManager", "FieldValueInvalid", "Invalid value: %s: must be "
                           "at most 128 printable characters" % gofmt(mgr))])
        patch = self.parse_body(req, res)
        if apply:
            return self.server_side_apply(req, res, ns, name, patch, mgr)
        with self.store.cond:
            cur = self.store.objs[res.id].get((ns, name))
            if cur is None:
                raise not_found(res, name)
            if req.ctype == "application/json-patch+json":
                try:
                    new = json_patch(cur, patch)
                except PatchFailed as e:
                    raise err(422, "Invalid", "the server rejected our request due to an error "
                              "in our request", {"causes": [{"reason": "UnexpectedServerResponse",
                                                             "message": str(e)}]})
            else:
                if not isinstance(patch, dict):
                    raise bad_request("json: cannot unmarshal %s into Go value of type "
                                      "map[string]interface {}" % jtype(patch))
                new = merge_patch(cur, patch)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise bad_request("the patched object is not a Kubernetes object")
            new = self.decode_object(req, res, new, ns)
            if new["metadata"].get("name") != name:
                raise bad_request("the name of the object (%s) does not match the name on "
                                  "the URL (%s)" % (new["metadata"].get("name"), name))
            return self.update(req, res, ns, name, new, mgr, rv_required=False)

    def server_side_apply(self, req, res, ns, name, cfg, mgr):
        if not isinstance(cfg, dict):
            raise bad_request("error decoding YAML: the apply configuration is not an object")
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise bad_request("apiVersion and kind must be set in apply configuration")
        cfg = self.decode_object(req, res, cfg, ns)
        if cfg["metadata"].get("name", name) != name:
            raise bad_request("the name of the object (%s) does not match the name on the URL "
                              "(%s)" % (cfg["metadata"]["name"], name))
        force = req.q("force") in ("true", "1", "True")
        cfg_paths = field_paths(cfg)
        with self.store.cond:
            cur = self.store.objs[res.id].get((ns, name))
            if cur is None:
                self.namespace_lifecycle(res, ns)
                obj, warnings = self.build(req, res, ns, name, cfg, None)
                owners = [[mgr, "Apply", cfg_paths & field_paths(obj), now_rfc3339()]]
                obj = self.persist(req, res, ns, name, "ADDED", obj, None, owners)
                return Response(201, obj, warning_headers(warnings))
            owners = [[m, op, set(p), t] for m, op, p, t in self.store.owners.get(
                (res.id, ns, name), [])]
            conflicts = collections.OrderedDict()
            for m, op, paths, _ in owners:
                if m == mgr and op == "Apply":
                    continue
                for c in sorted(cfg_paths):
                    if any(overlaps(p, c) for p in paths) and \
                            not json_equal(get_path(cur, c), get_path(cfg, c)):
                        conflicts.setdefault(m, []).append(c)
            if conflicts and not force:
                raise apply_conflict(res, conflicts)
            mine = next((e for e in owners if e[0] == mgr and e[1] == "Apply"), None)
            others = [p for e in owners if e is not mine for p in e[2]]
            merged = deep_merge(copy.deepcopy(cur), cfg)   # del_path below must not touch cur
            for p in (mine[2] if mine else ()):
                if p not in cfg_paths and not any(overlaps(p, q) for q in others):
                    del_path(merged, p)
            merged["metadata"].pop("managedFields", None)
            if "resourceVersion" not in cfg["metadata"]:
                merged["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]

            def own(owners, obj):
                new = cfg_paths & field_paths(obj)
                entry = None
                for e in owners:
                    if e[0] == mgr and e[1] == "Apply":
                        entry = e
                    elif e[0] in conflicts:   # forced: the applier takes conflicting fields
                        e[2] = {p for p in e[2]
                                if not any(overlaps(p, c) for c in conflicts[e[0]])}
                if entry is None:
                    owners.append([mgr, "Apply", new, now_rfc3339()])
                elif entry[2] != new:
                    entry[2], entry[3] = new, now_rfc3339()
                return owners
            return self.update(req, res, ns, name, merged, mgr, rv_required=False, apply=own)

    def do_delete(self, req, res, ns, name, user):
        opts = {}
        if req.body:
            try:
                opts = json.loads(req.body)
            except ValueError:
                raise bad_request("couldn't decode DeleteOptions")
        pre = (opts or {}).get("preconditions") or {}
        with self.store.cond:
            cur = self.store.objs[res.id].get((ns, name))
            if cur is None:
                raise not_found(res, name)
            m = cur["metadata"]
            for k, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if pre.get(k) and pre[k] != m.get(k):
                    raise conflict(res, name, "Precondition failed: %s in precondition: %s, %s "
                                   "in object meta: %s" % (label, pre[k], label, m.get(k)))
            if m.get("finalizers"):
                if m.get("deletionTimestamp"):
                    return Response(200, cur)
                obj = copy.deepcopy(cur)
                obj["metadata"].update(deletionTimestamp=now_rfc3339(),
                                       deletionGracePeriodSeconds=0)
                if m.get("generation"):
                    obj["metadata"]["generation"] = m["generation"] + 1
                return Response(200, self.persist(req, res, ns, name, "MODIFIED", obj, cur, None))
            if req.q("dryRun") != "All":
                self.store.commit(res, ns, name, "DELETED", None, cur)
        return Response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success",
                              "details": dets(name, res.group, res.plural, uid=m["uid"])},
                        sort=False)

    def do_deletecollection(self, req, res, ns, name, user):
        with self.store.cond:
            items, _, _ = self._visible(res, ns, req)
            rv = str(self.store.rv)
            out = []
            for o in items:
                m = o["metadata"]
                try:
                    self.do_delete(req, res, m.get("namespace", ""), m["name"], user)
                    out.append(o)
                except ApiError:
                    pass
        return Response(200, {"apiVersion": res.api_version, "kind": res.list_kind,
                              "metadata": {"resourceVersion": rv}, "items": out})


def human_age(ts):
    """metatable.ConvertToHumanReadableDateType / duration.HumanDuration, abridged."""
    try:
        secs = int(time.time() - calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return "<unknown>"
    if secs < -1:
        return "<invalid>"
    secs = max(secs, 0)
    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if secs < 120:
        return "%ds" % secs
    if mins < 10:
        return "%dm%ds" % (mins, secs % 60) if secs % 60 else "%dm" % mins
    if mins < 180:
        return "%dm" % mins
    if hours < 8:
        return "%dh%dm" % (hours, mins % 60) if mins % 60 else "%dh" % hours
    if hours < 48:
        return "%dh" % hours
    if hours < 192:
        return "%dd%dh" % (days, hours % 24) if hours % 24 else "%dd" % days
    return "%dd" % days


def strip_meta(obj, keep_meta=False):
    """What an update compares: all but metadata (for generation), or all but RV and
    managedFields (for no-op detection)."""
    if not keep_meta:
        return {k: v for k, v in obj.items() if k != "metadata"}
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items()
                       if k not in ("resourceVersion", "managedFields")}
    return json.dumps(out, sort_keys=True)


def update_owners(owners, old, new, mgr):
    """A non-apply write: changed fields move to `mgr` (operation Update)."""
    old_p, new_p = field_paths(old), field_paths(new)
    changed = {p for p in new_p if not json_equal(get_path(old, p), get_path(new, p))}
    removed = old_p - new_p
    now = now_rfc3339()
    entry = None
    for e in owners:
        if e[0] == mgr and e[1] == "Update":
            entry = e
        else:
            e[2] = {p for p in e[2] if not any(overlaps(p, c) for c in changed | removed)}
    if entry is None and changed:
        entry = [mgr, "Update", set(), now]
        owners.append(entry)
    if entry is not None:
        before = set(entry[2])
        entry[2] = (entry[2] | changed) - removed
        # managedFieldsUpdater: an operation that changed any field stamps its manager's
        # entry with the time, even when the manager owned those fields already.
        if entry[2] != before or changed:
            entry[3] = now
    return owners


def apply_conflict(res, conflicts):
    n = sum(len(v) for v in conflicts.values())
    causes = []
    for m, paths in conflicts.items():
        for p in paths:
            causes.append({"reason": "FieldManagerConflict", "field": "." + ".".join(p),
                           "message": 'conflict with "%s" using %s' % (m, res.api_version)})
    if n == 1:
        msg = "Apply failed with 1 conflict: %s: %s" % (causes[0]["message"], causes[0]["field"])
    else:
        msg = "Apply failed with %d conflicts: " % n + "\n".join(
            'conflicts with "%s" using %s:\n%s' % (m, res.api_version, "\n".join(
                "- ." + ".".join(p) for p in paths)) for m, paths in conflicts.items())
    return err(409, "Conflict", msg, {"causes": causes})


def warning_headers(warnings):
    return {"Warning": ['299 - "%s"' % w.replace('"', '\\"') for w in warnings]} \
        if warnings else {}


def expired_status(rv, oldest):
    return status_body(410, "Expired", "too old resource version: %d (%d)" % (rv, oldest))


def check_go_yaml(body):
    """go-yaml v2 (the apiserver's apply parser) rejects JSON's \\/ escape and UTF-16
    surrogate escapes; PyYAML accepts them.  Reject them too (approximate: any odd run of
    backslashes before / or before uD800-uDFFF)."""
    text = body.decode("utf-8", "replace")
    for m in re.finditer(r"(\\+)(/|u[dD][89abAB])", text):
        if len(m.group(1)) % 2:
            what = ("found unknown escape character" if m.group(2) == "/"
                    else "found invalid Unicode character escape code")
            line = text.count("\n", 0, m.start()) + 1
            raise bad_request("error decoding YAML: yaml: line %d: %s while parsing a quoted "
                              "scalar" % (line, what))


# --------------------------------------------------------------------------------------------
# Request log and faults

class RequestLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries, self.seq = [], 0

    def add(self, **kw):
        with self.lock:
            self.seq += 1
            e = dict(seq=self.seq, **kw)
            self.entries.append(e)
            return e

    def snapshot(self, since=0):
        with self.lock:
            return [dict(e) for e in self.entries if e["seq"] > since]

    def clear(self):
        with self.lock:
            self.entries = []


class Faults:
    FIELDS = {"method": None, "path_regex": None, "query_regex": None, "count": 1,
              "status": None, "retry_after": None, "delay_ms": None, "action": None,
              "message": None, "when": "before"}

    def __init__(self):
        self.lock = threading.Lock()
        self.rules, self.seq = [], 0

    def add(self, rule):
        unknown = set(rule) - set(self.FIELDS)
        if unknown:
            raise ValueError("unknown fault fields: %s" % ", ".join(sorted(unknown)))
        r = dict(self.FIELDS)
        r.update(rule)
        if r["action"] not in (None, "drop", "hang", "drop_mid"):
            raise ValueError("action must be drop, hang or drop_mid")
        if r["when"] not in ("before", "after"):
            raise ValueError("when must be before or after")
        for k in ("path_regex", "query_regex"):
            if r[k] is not None:
                re.compile(r[k])
        with self.lock:
            self.seq += 1
            r["id"], r["hits"] = self.seq, 0
            self.rules.append(r)
        return r

    def match(self, method, path, query):
        with self.lock:
            for r in self.rules:
                if r["method"] and r["method"].upper() != method:
                    continue
                if r["path_regex"] and not re.search(r["path_regex"], path):
                    continue
                if r["query_regex"] and not re.search(r["query_regex"], query):
                    continue
                r["hits"] += 1
                if r["count"] != -1:
                    r["count"] -= 1
                    if r["count"] <= 0:
                        self.rules.remove(r)
                return dict(r)
        return None

    def list(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def clear(self):
        with self.lock:
            self.rules = []


def fault_error(rule, api, info):
    code = int(rule["status"])
    msg = rule.get("message")
    res = api.res(info.group, info.resource) if info.resource_request else None
    name = info.name or "unknown"
    hdrs = {}
    ra = rule.get("retry_after")
    if ra is None and code == 429:
        ra = 1
    if ra is not None:
        hdrs["Retry-After"] = str(ra)
    if code == 409 and res is not None and not msg:
        e = conflict(res, name)
        e.headers = hdrs
        return e
    if code == 404 and res is not None and not msg:
        e = not_found(res, name)
        e.headers = hdrs
        return e
    reason, default = {
        400: ("BadRequest", "injected fault"),
        401: ("Unauthorized", "Unauthorized"),
        403: ("Forbidden", "forbidden: injected fault"),
        404: ("NotFound", "the server could not find the requested resource"),
        409: ("Conflict", "Operation cannot be fulfilled: " + OPTIMISTIC_LOCK),
        410: ("Expired", "too old resource version"),
        422: ("Invalid", "the server rejected our request due to an error in our request"),
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: injected fault"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: ("Timeout", "Timeout: request did not complete within requested timeout - "
                         "context deadline exceeded"),
    }.get(code, ("", "injected fault"))
    details = {"retryAfterSeconds": int(ra)} if ra is not None and code in (429, 500, 503, 504) \
        else None
    return err(code, reason, msg or default, details, hdrs)


# --------------------------------------------------------------------------------------------
# HTTP

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-test"
    sys_version = ""

    def log_message(self, fmt, *args):   # replaced by our one line per request
        pass

    def do_any(self):
        srv = self.server
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        t0 = time.time()
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path == "/_test" or path.startswith("/_test/"):
            return self.control(path, query, body)
        ctype = self.headers.get("Content-Type")
        entry = srv.reqlog.add(t=t0, t_done=None, method=self.command, path=path,
                               query={k: (v[0] if len(v) == 1 else v) for k, v in query.items()},
                               content_type=ctype, status=None, body=parse_for_log(body, ctype),
                               user_agent=self.headers.get("User-Agent"), conn=self.conn_id,
                               fault=None)
        req = Request(self.command, path, query, self.headers, body)
        rule = srv.faults.match(self.command, path, url.query)
        if rule:
            entry["fault"] = rule["id"]
            if rule["delay_ms"] and rule["action"] != "hang":
                srv.stop_event.wait(rule["delay_ms"] / 1000.0)
            if rule["action"] == "hang":
                return self.finish_entry(entry, t0, None, "hang", self.hang)
            if rule["when"] == "before":
                if rule["action"] == "drop":
                    return self.finish_entry(entry, t0, None, "drop", self.drop)
                if rule["status"]:
                    e = fault_error(rule, srv.api, RequestInfo(self.command, path, query))
                    self.send_json(e.code, e.body, e.headers, sort=False)
                    return self.finish_entry(entry, t0, e.code, "fault %s" % e.code)
        try:
            resp = srv.api.handle(req)
        except ApiError as e:
            resp = Response(e.code, e.plain.encode() if e.plain else e.body, e.headers,
                            sort=False)
            if e.plain:
                resp.headers.update({"Content-Type": "text/plain; charset=utf-8",
                                     "X-Content-Type-Options": "nosniff"})
        except Exception as e:   # a bug here: answer 500 and say so
            import traceback
            traceback.print_exc()
            resp = Response(500, status_body(500, "InternalError",
                                             "Internal error occurred: %r" % e), sort=False)
        if rule and rule["when"] == "after" and rule["action"] != "drop_mid":
            if rule["action"] == "drop":
                return self.finish_entry(entry, t0, None, "drop after", self.drop)
            if rule["status"]:
                e = fault_error(rule, srv.api, RequestInfo(self.command, path, query))
                resp = Response(e.code, e.body, e.headers, sort=False)
        truncate = bool(rule and rule["action"] == "drop_mid")
        if resp.watch is not None:
            entry["status"] = 200
            return self.finish_entry(entry, t0, 200, "watch",
                                     lambda: self.stream_watch(resp.watch, truncate))
        self.send_json(resp.code, resp.body, resp.headers, sort=resp.sort, truncate=truncate)
        self.finish_entry(entry, t0, resp.code, "drop_mid" if truncate else "")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

    def finish_entry(self, entry, t0, code, note, action=None):
        if action:
            if code is None:
                log("#%d c%d %s %s%s -> %s" % (entry["seq"], self.conn_id, self.command,
                                               self.path, "", note))
            action()
        entry["status"] = code
        entry["t_done"] = time.time()
        if code is not None or action is None:
            log("#%d c%d %s %s -> %s %.1fms %s%s" % (
                entry["seq"], self.conn_id, self.command, self.path, code,
                (entry["t_done"] - t0) * 1000, note,
                " ua=" + entry["user_agent"] if entry["user_agent"] else ""))

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def head_bytes(self, code, headers):
        lines = ["HTTP/1.1 %d %s" % (code, REASONS.get(code, ("",))[0]),
                 "Audit-Id: " + str(uuid.uuid4()), "Cache-Control: no-cache, private",
                 "Date: " + email.utils.formatdate(usegmt=True)]
        for k, v in headers.items():
            for x in (v if isinstance(v, list) else [v]):
                lines.append("%s: %s" % (k, x))
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def send_json(self, code, body, headers=None, sort=True, truncate=False):
        """Headers and body in ONE write (no Nagle/delayed-ACK stall)."""
        headers = dict(headers or {})
        if isinstance(body, bytes):
            data = body
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = dumps(body, sort=sort)
            headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(data))
        out = self.head_bytes(code, headers) + (b"" if self.command == "HEAD" else data)
        if truncate:
            self.wfile.write(out[:len(out) - max(1, len(data) // 2)])
            self.drop()
            return
        self.wfile.write(out)

    def drop(self):
        self.close_connection = True
        try:
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
        except OSError:
            pass

    def peer_closed(self, timeout=0.0):
        sock = self.connection
        try:
            if not (getattr(sock, "pending", lambda: 0)() or
                    select.select([sock], [], [], timeout)[0]):
                return False
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""
            finally:
                sock.setblocking(True)
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ValueError):
            return True

    def hang(self):
        """Never answer: wait until the client goes away or the server stops."""
        self.close_connection = True
        while not self.server.stop_event.is_set():
            if self.peer_closed(0.5):
                break
        self.drop()

    def stream_watch(self, w, truncate):
        store = self.server.api.store
        res = w["res"]
        wid = id(w)
        with store.cond:
            store.watches[wid] = {"conn": self.conn_id, "path": self.path,
                                  "resource": res.qualified, "namespace": w["ns"],
                                  "since": time.time()}
        try:
            self.wfile.write(self.head_bytes(200, {"Content-Type": "application/json",
                                                   "Transfer-Encoding": "chunked"}))
            if truncate:
                self.wfile.write(b'80\r\n{"type":"ADDED","obj')
                return self.drop()
            self._watch_loop(store, res, w)
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, ValueError):
            self.close_connection = True
        finally:
            with store.cond:
                store.watches.pop(wid, None)

    def _watch_loop(self, store, res, w):
        def send(etype, obj):
            data = b'{"type":"%s","object":%s}\n' % (etype.encode(), dumps(obj)[:-1])
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def bookmark(rv, initial_end=False):
            meta = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            send("BOOKMARK", {"apiVersion": res.api_version, "kind": res.kind,
                              "metadata": meta})

        def matches(o):
            return o is not None and (not w["ns"] or o["metadata"].get("namespace") == w["ns"]) \
                and w["ls"].matches(o["metadata"].get("labels")) and w["fs"].matches(o)
        if w["expired"]:
            return send("ERROR", w["expired"])
        for o in w["initial"]:
            send("ADDED", o)
        last = w["start"]
        if w["initial_end"]:
            bookmark(last, True)
        interval = self.server.api.bookmark_interval
        start = time.monotonic()
        deadline = start + w["timeout"]
        next_bm = start + interval if interval > 0 else float("inf")
        bm_seq = w["bookmark_seq"]
        while True:
            with store.cond:
                now = time.monotonic()
                if not (store.stopping or store.epoch != w["epoch"] or store.rv > last or
                        bm_seq != store.bookmark_seq or now >= deadline):
                    store.cond.wait(max(0.0, min(0.5, deadline - now, next_bm - now)))
                stopping = store.stopping or store.epoch != w["epoch"]
                if last < store.history_start:
                    expired = expired_status(last, store.history_start)
                else:
                    expired = None
                    evs = store.events_since(last, res.id)
                    last = max(last, store.rv)
                want_bm = bm_seq != store.bookmark_seq
                bm_seq = store.bookmark_seq
            if expired:
                return send("ERROR", expired)
            for ev in evs:
                if ev.type == "MODIFIED":
                    old_ok, new_ok = matches(ev.prev), matches(ev.obj)
                    if new_ok:
                        send("MODIFIED" if old_ok else "ADDED", ev.obj)
                    elif old_ok:
                        gone = copy.deepcopy(ev.prev)
                        gone["metadata"]["resourceVersion"] = str(ev.rv)
                        send("DELETED", gone)
                elif matches(ev.obj):
                    send(ev.type, ev.obj)
            if stopping:
                return
            now = time.monotonic()
            if now >= deadline:
                if w["bookmarks"]:
                    bookmark(last)
                return
            if w["bookmarks"] and (want_bm or now >= next_bm):
                bookmark(last)
                next_bm = now + interval if interval > 0 else float("inf")
            if self.peer_closed(0):
                raise OSError("client went away")

    # ---- control API
    def control(self, path, query, body):
        srv = self.server
        api = srv.api
        store = api.store
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return self.send_json(400, {"error": "body is not JSON"}, sort=False)
        m, p = self.command, path.rstrip("/")
        since = int((query.get("since") or ["0"])[0])
        if p == "/_test/requests" and m == "GET":
            out = srv.reqlog.snapshot(since)
        elif p == "/_test/requests" and m == "DELETE":
            srv.reqlog.clear()
            out = {"ok": True}
        elif p == "/_test/faults" and m == "POST":
            try:
                out = srv.faults.add(data)
            except (ValueError, re.error) as e:
                return self.send_json(400, {"error": str(e)}, sort=False)
        elif p == "/_test/faults" and m == "GET":
            out = srv.faults.list()
        elif p == "/_test/faults" and m == "DELETE":
            srv.faults.clear()
            out = {"ok": True}
        elif p == "/_test/compact" and m == "POST":
            store.compact()
            out = {"ok": True, "resourceVersion": str(store.rv)}
        elif p == "/_test/close-watches" and m == "POST":
            store.close_watches()
            out = {"ok": True}
        elif p == "/_test/bookmark" and m == "POST":
            with store.cond:
                store.bookmark_seq += 1
                store.cond.notify_all()
            out = {"ok": True}
        elif p == "/_test/watches" and m == "GET":
            with store.cond:
                out = list(store.watches.values())
        elif p == "/_test/objects" and m == "GET":
            with store.cond:
                hidden = [("apiextensions.k8s.io", "customresourcedefinitions"),
                          ("", "namespaces")] if "all" not in query else []
                objs = [o for rid in sorted(store.objs) if rid not in hidden
                        for _, o in sorted(store.objs[rid].items())]
                out = {"resourceVersion": str(store.rv), "objects": objs}
        elif p == "/_test/token" and m == "POST":
            api.tokens[:] = [data["token"]] + list(data.get("extra", []))
            out = {"ok": True}
        elif p == "/_test/rbac" and m == "POST":
            rules = data.get("rules")
            if not isinstance(data.get("token"), str) or rules is not None and not (
                    isinstance(rules, list) and all(isinstance(r, dict) for r in rules)):
                return self.send_json(400, {"error": "want {token: T, rules: [...] or null}"},
                                      sort=False)
            if rules is None:
                api.rbac.pop(data["token"], None)
            else:
                api.rbac[data["token"]] = rules
            out = {"ok": True}
        else:
            return self.send_json(404, {"error": "no such control endpoint: %s %s" % (m, p)},
                                  sort=False)
        self.send_json(200, out, sort=False)


def parse_for_log(body, ctype):
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        pass
    if ctype and "yaml" in ctype:
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError:
            pass
    return None


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 128

    def __init__(self, addr, api, ssl_ctx):
        self.api, self.ssl_ctx = api, ssl_ctx
        self.reqlog, self.faults = RequestLog(), Faults()
        self.stop_event = threading.Event()
        self.conn_seq = 0
        self.conn_lock = threading.Lock()
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def finish_request(self, request, client_address):
        """Runs in the connection's thread: the TLS handshake happens here, not in accept."""
        with self.conn_lock:
            self.conn_seq += 1
            conn_id = self.conn_seq
        try:
            request.settimeout(10)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            if not isinstance(e, (ssl.SSLEOFError, ConnectionResetError)):
                log("c%d TLS handshake failed: %s" % (conn_id, e))
            return
        try:
            handler = Handler.__new__(Handler)
            handler.conn_id = conn_id
            handler.__init__(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        log("connection error: %r" % (sys.exc_info()[1],))


# --------------------------------------------------------------------------------------------
# Certificates, files, main

def make_certs(d, rsa=False):
    key = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt",
                                               "ec_paramgen_curve:prime256v1"]

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run("req", "-x509", *key, "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=kubeapi-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *key, "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kube-apiserver")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\n"
                "subjectKeyIdentifier=hash\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext")


def write_file(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def kubeconfig(port, ca_pem, token):
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "test", "cluster": {
            "server": "https://127.0.0.1:%d" % port,
            "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                  "namespace": "default"}}],
        "current-context": "test"}, sort_keys=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="where to write certs, token, kubeconfig, port")
    ap.add_argument("--groups", default="traefik.io,traefik.containo.us",
                    help="comma-separated Traefik API groups to serve")
    ap.add_argument("--history", type=int, default=10000,
                    help="watch events kept; older resourceVersions get 410 Expired")
    ap.add_argument("--bookmark-interval", type=float, default=60.0,
                    help="seconds between BOOKMARKs on watches that allow them (0: only at "
                         "timeout and on POST /_test/bookmark)")
    ap.add_argument("--token", help="bearer token (default: random)")
    ap.add_argument("--rsa", action="store_true", help="RSA-2048 keys instead of ECDSA P-256")
    args = ap.parse_args(argv)
    groups = [g for g in args.groups.split(",") if g]
    for g in groups:
        if g not in CRD_FILES:
            ap.error("unknown group %s (known: %s)" % (g, ", ".join(CRD_FILES)))
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    make_certs(d, args.rsa)
    token = args.token or secrets.token_hex(24)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "server.crt"), os.path.join(d, "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    api = Api(groups, args.history, [token], args.bookmark_interval)
    srv = Server(("127.0.0.1", 0), api, ctx)
    port = srv.server_address[1]
    api.server_address = "127.0.0.1:%d" % port
    with open(os.path.join(d, "ca.crt")) as f:
        ca_pem = f.read()
    write_file(os.path.join(d, "token"), token + "\n", 0o600)
    write_file(os.path.join(d, "kubeconfig"), kubeconfig(port, ca_pem, token), 0o600)
    write_file(os.path.join(d, "port"), "%d\n" % port)   # LAST: the readiness signal

    # Only this thread takes SIGTERM/SIGINT (threads started below inherit the blocked mask).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    log("serving https://127.0.0.1:%d groups=%s history=%d dir=%s"
        % (port, ",".join(groups), args.history, d))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    log("stopping")
    srv.stop_event.set()
    with api.store.cond:
        api.store.stopping = True
        api.store.cond.notify_all()
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
