"""Self-tests of the Kubernetes API test server (tests/kubeapi/server.py).

    /usr/bin/python3 -m unittest discover -s tests/kubeapi -v        (from the repo root)
    /usr/bin/python3 tests/kubeapi/test_server.py -v                 (same tests)

The table rows of kube-apiserver-behaviour.md are the TestBehaviourTable tests; the others
cover watch, selectors, faults, dryRun, apply, the request log and kubectl.
"""

import http.client
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from cbtest import KubeAPI, wait_until  # noqa: E402

G, NS, IR = "traefik.io", "default", "ingressroutes"
_names = itertools.count(1)
kube = None
_tmp = None


def setUpModule():
    global kube, _tmp
    _tmp = tempfile.TemporaryDirectory(prefix="kubeapi-test-")
    kube = KubeAPI(_tmp.name)


def tearDownModule():
    code = kube.stop()
    _tmp.cleanup()
    assert code == 0, "server did not exit 0 on SIGTERM: %r" % code


def uname(prefix="ir"):
    return "%s-%d" % (prefix, next(_names))


def ingressroute(name, weights=(90, 10), labels=None, group=G, **route_extra):
    route = {"match": "Host(`shop.example.com`)", "kind": "Rule",
             "services": [{"name": "shop-v%d" % (i + 1), "port": 80, "weight": w}
                          for i, w in enumerate(weights)]}
    route.update(route_extra)
    meta = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": group + "/v1alpha1", "kind": "IngressRoute", "metadata": meta,
            "spec": {"entryPoints": ["web"], "routes": [route]}}


def causes(body):
    return [(c["field"], c["reason"]) for c in body["details"]["causes"]]


class WatchReader:
    """Consumes a watch in a thread; events land in .events, .done is set at stream end."""

    def __init__(self, **query):
        self.events, self.error, self.done = [], None, threading.Event()
        group, ns, plural = query.pop("group", G), query.pop("ns", NS), query.pop("plural", IR)
        self.gen = kube.watch(group, ns, plural, timeout=30, **query)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for ev in self.gen:
                self.events.append(ev)
        except Exception as e:   # recorded for the test to see
            self.error = e
        finally:
            self.done.set()

    def wait(self, n, timeout=5):
        wait_until(lambda: len(self.events) >= n, timeout, what="%d watch events (got %r)"
                   % (n, [e["type"] for e in self.events]))
        return self.events[:n]


def wait_watching(n=1):
    wait_until(lambda: len(kube.watches()) >= n, 5, what="%d open watches" % n)


# --------------------------------------------------------------------------------------------

class TestBehaviourTable(unittest.TestCase):
    """One test per row of kube-apiserver-behaviour.md."""

    def create(self, obj=None, **kw):
        return kube.create(G, NS, IR, obj or ingressroute(uname(), **kw))

    def test_get_missing_is_404_notfound_status(self):
        st, _, body = kube.request("GET", kube.path(G, NS, IR, "nope"))
        self.assertEqual(st, 404)
        self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure",
                                "message": 'ingressroutes.traefik.io "nope" not found',
                                "reason": "NotFound",
                                "details": {"name": "nope", "group": "traefik.io",
                                            "kind": "ingressroutes"}, "code": 404})

    def test_post_new_is_201_with_server_metadata(self):
        name = uname()
        st, _, body = kube.request("POST", kube.path(G, NS, IR), ingressroute(name))
        self.assertEqual(st, 201)
        m = body["metadata"]
        self.assertEqual((m["name"], m["namespace"], m["generation"]), (name, NS, 1))
        for k in ("uid", "creationTimestamp", "resourceVersion", "managedFields"):
            self.assertTrue(m.get(k), k)
        self.assertTrue(m["resourceVersion"].isdigit())
        self.assertEqual(m["managedFields"][0]["operation"], "Update")
        self.assertEqual(kube.get(G, NS, IR, name)["spec"], ingressroute(name)["spec"])

    def test_post_existing_is_409_already_exists(self):
        obj = self.create()
        st, _, body = kube.request("POST", kube.path(G, NS, IR),
                                   ingressroute(obj["metadata"]["name"]))
        self.assertEqual((st, body["reason"]), (409, "AlreadyExists"))
        self.assertEqual(body["message"], 'ingressroutes.traefik.io "%s" already exists'
                         % obj["metadata"]["name"])

    def test_put_current_rv_is_200_and_bumps_rv_and_generation(self):
        obj = self.create()
        obj["spec"]["routes"][0]["services"][0]["weight"] = 50
        st, _, body = kube.request("PUT", kube.path(G, NS, IR, obj["metadata"]["name"]), obj)
        self.assertEqual(st, 200)
        self.assertGreater(int(body["metadata"]["resourceVersion"]),
                           int(obj["metadata"]["resourceVersion"]))
        self.assertEqual(body["metadata"]["generation"], 2)
        self.assertEqual(body["metadata"]["uid"], obj["metadata"]["uid"])
        self.assertEqual(body["spec"]["routes"][0]["services"][0]["weight"], 50)

    def _put_rv(self, rv):
        obj = self.create()
        name = obj["metadata"]["name"]
        obj["metadata"]["resourceVersion"] = rv(obj)
        obj["spec"]["routes"][0]["services"][0]["weight"] = 1
        return name, kube.request("PUT", kube.path(G, NS, IR, name), obj)

    def test_put_stale_rv_is_409_conflict_exact_message(self):
        name, (st, _, body) = self._put_rv(lambda o: str(int(o["metadata"]["resourceVersion"])
                                                         - 1))
        self.assertEqual(st, 409)
        self.assertEqual(body, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'Operation cannot be fulfilled on ingressroutes.traefik.io "%s": the '
                       'object has been modified; please apply your changes to the latest '
                       'version and try again' % name,
            "reason": "Conflict",
            "details": {"name": name, "group": "traefik.io", "kind": "ingressroutes"},
            "code": 409})

    def test_put_future_rv_is_409_conflict(self):
        _, (st, _, body) = self._put_rv(lambda o: "999999999")
        self.assertEqual((st, body["reason"]), (409, "Conflict"))

    def test_put_without_rv_is_422_invalid(self):
        obj = self.create()
        del obj["metadata"]["resourceVersion"]
        st, _, body = kube.request("PUT", kube.path(G, NS, IR, obj["metadata"]["name"]), obj)
        self.assertEqual((st, body["reason"]), (422, "Invalid"))
        self.assertEqual(causes(body), [("metadata.resourceVersion", "FieldValueInvalid")])
        self.assertIn("must be specified for an update", body["message"])

    def test_put_body_naming_another_object_is_400(self):
        obj = self.create()
        name = obj["metadata"]["name"]
        obj["metadata"]["name"] = "other"
        st, _, body = kube.request("PUT", kube.path(G, NS, IR, name), obj)
        self.assertEqual((st, body["reason"]), (400, "BadRequest"))
        self.assertEqual(body["message"], "the name of the object (other) does not match the "
                                          "name on the URL (%s)" % name)

    def test_strategic_merge_patch_is_415_exact_body(self):
        obj = self.create()
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, obj["metadata"]["name"]),
                                   {"spec": {}}, "application/strategic-merge-patch+json")
        self.assertEqual(st, 415)
        self.assertEqual(body, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the body of the request was in an unknown format - accepted media "
                       "types include: application/json-patch+json, "
                       "application/merge-patch+json, application/apply-patch+yaml",
            "reason": "UnsupportedMediaType", "code": 415})

    def test_merge_patch_is_200(self):
        obj = self.create(labels={"keep": "me"})
        name = obj["metadata"]["name"]
        out = kube.merge_patch(G, NS, IR, name, {"metadata": {"labels": {"new": "x"}},
                                                 "spec": {"entryPoints": ["websecure"]}})
        self.assertEqual(out["metadata"]["labels"], {"keep": "me", "new": "x"})
        self.assertEqual(out["spec"]["entryPoints"], ["websecure"])
        self.assertEqual(out["spec"]["routes"], obj["spec"]["routes"])   # untouched
        out = kube.merge_patch(G, NS, IR, name, {"metadata": {"labels": {"keep": None}}})
        self.assertEqual(out["metadata"]["labels"], {"new": "x"})       # null deletes

    def test_merge_patch_with_stale_rv_is_409_and_current_rv_is_200(self):
        obj = self.create()
        name, rv = obj["metadata"]["name"], obj["metadata"]["resourceVersion"]
        kube.merge_patch(G, NS, IR, name, {"spec": {"entryPoints": ["a"]}})
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, name), {
            "metadata": {"resourceVersion": rv}, "spec": {"entryPoints": ["b"]}},
            "application/merge-patch+json")
        self.assertEqual((st, body["reason"]), (409, "Conflict"))
        cur = kube.get(G, NS, IR, name)
        self.assertEqual(cur["spec"]["entryPoints"], ["a"])
        out = kube.merge_patch(G, NS, IR, name, {"metadata": {"resourceVersion": cur[
            "metadata"]["resourceVersion"]}, "spec": {"entryPoints": ["b"]}})
        self.assertEqual(out["spec"]["entryPoints"], ["b"])

    def test_json_patch_is_200(self):
        obj = self.create()
        out = kube.json_patch(G, NS, IR, obj["metadata"]["name"], [
            {"op": "test", "path": "/spec/routes/0/services/0/weight", "value": 90},
            {"op": "replace", "path": "/spec/routes/0/services/0/weight", "value": 70},
            {"op": "add", "path": "/spec/entryPoints/-", "value": "websecure"}])
        self.assertEqual(out["spec"]["routes"][0]["services"][0]["weight"], 70)
        self.assertEqual(out["spec"]["entryPoints"], ["web", "websecure"])

    def test_json_patch_failing_test_op_is_422(self):
        obj = self.create()
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, obj["metadata"]["name"]), [
            {"op": "test", "path": "/spec/routes/0/services/0/weight", "value": 1},
            {"op": "replace", "path": "/spec/routes/0/services/0/weight", "value": 70}],
            "application/json-patch+json")
        self.assertEqual((st, body["reason"]), (422, "Invalid"))
        self.assertEqual(kube.get(G, NS, IR, obj["metadata"]["name"])["metadata"][
            "resourceVersion"], obj["metadata"]["resourceVersion"])

    def _post_invalid(self, obj, field, reason):
        st, _, body = kube.request("POST", kube.path(G, NS, IR), obj)
        self.assertEqual((st, body["reason"]), (422, "Invalid"), body)
        self.assertIn((field, reason), causes(body))
        self.assertEqual(body["details"]["kind"], "IngressRoute")
        self.assertTrue(body["message"].startswith('IngressRoute.traefik.io "%s" is invalid: '
                                                   % obj["metadata"]["name"]), body["message"])
        self.assertIsNone(kube.get(G, NS, IR, obj["metadata"]["name"]))
        return body

    def test_bad_weights_are_422(self):
        w = "spec.routes[0].services[0].weight"
        body = self._post_invalid(ingressroute(uname(), weights=("ten", 10)), w,
                                  "FieldValueTypeInvalid")
        self.assertIn('must be of type integer: "string"', body["message"])
        self._post_invalid(ingressroute(uname(), weights=(1.5, 10)), w, "FieldValueTypeInvalid")
        body = self._post_invalid(ingressroute(uname(), weights=(-1, 10)), w,
                                  "FieldValueInvalid")
        self.assertIn("should be greater than or equal to 0", body["message"])

    def test_bad_routes_are_422(self):
        obj = ingressroute(uname())
        del obj["spec"]["routes"][0]["match"]
        self._post_invalid(obj, "spec.routes[0].match", "FieldValueRequired")
        body = self._post_invalid(ingressroute(uname(), kind="Nope"), "spec.routes[0].kind",
                                  "FieldValueNotSupported")
        self.assertIn('Unsupported value: "Nope": supported values: "Rule"', body["message"])
        self._post_invalid(ingressroute(uname(), priority="high"), "spec.routes[0].priority",
                           "FieldValueTypeInvalid")

    def test_several_errors_give_one_cause_each(self):
        obj = ingressroute(uname(), weights=("ten", -1), kind="Nope")
        st, _, body = kube.request("POST", kube.path(G, NS, IR), obj)
        self.assertEqual(st, 422)
        self.assertEqual(sorted(causes(body)), [
            ("spec.routes[0].kind", "FieldValueNotSupported"),
            ("spec.routes[0].services[0].weight", "FieldValueTypeInvalid"),
            ("spec.routes[0].services[1].weight", "FieldValueInvalid")])
        self.assertIn(" is invalid: [", body["message"])

    def test_unknown_field_is_pruned_silently(self):
        obj = ingressroute(uname(), bogusField="x")
        obj["spec"]["alsoBogus"] = {"a": 1}
        st, headers, body = kube.request("POST", kube.path(G, NS, IR), obj)
        self.assertEqual(st, 201)
        self.assertNotIn("bogusField", body["spec"]["routes"][0])
        stored = kube.get(G, NS, IR, obj["metadata"]["name"])
        self.assertNotIn("bogusField", stored["spec"]["routes"][0])
        self.assertNotIn("alsoBogus", stored["spec"])
        self.assertIn('unknown field \\"spec.routes[0].bogusField\\"',
                      " ".join(headers.get_all("Warning")))

    def test_unknown_field_with_strict_validation_is_400(self):
        st, _, body = kube.request("POST", kube.path(G, NS, IR, fieldValidation="Strict"),
                                   ingressroute(uname(), bogusField="x"))
        self.assertEqual((st, body["reason"]), (400, "BadRequest"))
        self.assertIn('strict decoding error: unknown field "spec.routes[0].bogusField"',
                      body["message"])

    def test_delete_is_200_then_404(self):
        obj = self.create()
        name = obj["metadata"]["name"]
        st, _, body = kube.request("DELETE", kube.path(G, NS, IR, name))
        self.assertEqual((st, body["status"]), (200, "Success"))
        self.assertEqual(body["details"]["uid"], obj["metadata"]["uid"])
        self.assertIsNone(kube.get(G, NS, IR, name))
        st, _, body = kube.request("DELETE", kube.path(G, NS, IR, name))
        self.assertEqual((st, body["reason"]), (404, "NotFound"))

    def test_group_not_served_is_plain_text_404(self):
        for path in ("/apis/nope.example.com/v1/namespaces/default/things",
                     "/apis/traefik.io/v1/namespaces/default/ingressroutes",
                     "/apis/traefik.io/v1alpha1/namespaces/default/nothings",
                     "/apis/nope.example.com/v1"):
            st, headers, body = kube.request("GET", path)
            self.assertEqual((st, body), (404, "404 page not found\n"), path)
            self.assertTrue(headers["Content-Type"].startswith("text/plain"))

    def test_wrong_token_is_401(self):
        st, _, body = kube.request("GET", kube.path(G, NS, IR), token="wrong")
        self.assertEqual(st, 401)
        self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": "Unauthorized",
                                "reason": "Unauthorized", "code": 401})

    def test_no_token_is_403_anonymous(self):
        st, _, body = kube.request("GET", kube.path(G, NS, IR), token=None)
        self.assertEqual((st, body["reason"]), (403, "Forbidden"))
        self.assertEqual(body["message"], 'ingressroutes.traefik.io is forbidden: User '
                         '"system:anonymous" cannot list resource "ingressroutes" in API group '
                         '"traefik.io" in the namespace "default"')
        st, _, body = kube.request("PUT", kube.path(G, NS, IR, "x"), {}, token=None)
        self.assertIn('"x" is forbidden: User "system:anonymous" cannot update',
                      body["message"])
        st, _, body = kube.request("GET", "/apis", token=None)
        self.assertEqual(st, 403)
        st, _, body = kube.request("GET", "/version", token=None)   # public-info-viewer
        self.assertEqual(st, 200)

    def test_rbac_rules_per_token_answer_reviews_and_requests(self):
        limited = "limited-token"
        kube.control("POST", "token", {"token": kube.token, "extra": [limited]})
        self.addCleanup(kube.control, "POST", "token", {"token": kube.token})
        kube.control("POST", "rbac", {"token": limited, "rules": [
            {"verbs": ["get", "list"], "apiGroups": [G], "resources": ["*"]},
            {"verbs": ["create"], "apiGroups": [""], "resources": ["events"],
             "namespaces": ["shop"]}]})
        self.addCleanup(kube.control, "POST", "rbac", {"token": limited, "rules": None})

        def review(verb, group, resource, ns, token):
            st, _, body = kube.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                 "spec": {"resourceAttributes": {"verb": verb, "group": group,
                                                 "resource": resource, "namespace": ns}}},
                token=token)
            self.assertEqual(st, 201, body)
            self.assertEqual(body["spec"]["resourceAttributes"]["verb"], verb)
            return body["status"]["allowed"]
        self.assertTrue(review("list", G, IR, "", limited))
        self.assertTrue(review("get", G, "middlewares", "x", limited))
        self.assertFalse(review("update", G, IR, "x", limited))
        self.assertTrue(review("create", "", "events", "shop", limited))
        self.assertFalse(review("create", "", "events", "other", limited))
        self.assertFalse(review("create", "", "events", "", limited))   # a Role: one namespace
        self.assertTrue(review("update", G, IR, "x", True))           # no rules: everything
        # The requests themselves get the same answer.
        self.assertEqual(kube.request("GET", kube.path(G, NS, IR), token=limited)[0], 200)
        st, _, body = kube.request("POST", kube.path(G, NS, IR), ingressroute(uname()),
                                   token=limited)
        self.assertEqual((st, body["reason"]), (403, "Forbidden"))
        self.assertEqual(body["message"], 'ingressroutes.traefik.io is forbidden: User '
                         '"test-user" cannot create resource "ingressroutes" in API group '
                         '"traefik.io" in the namespace "default"')
        self.assertEqual(kube.request("POST", kube.path(G, NS, IR), ingressroute(uname()))[0],
                         201)


class TestWrites(unittest.TestCase):
    def test_noop_put_keeps_rv_and_makes_no_event(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        rv_before = kube.objects()["resourceVersion"]
        out = kube.put(G, NS, IR, obj)
        self.assertEqual(out["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"])
        self.assertEqual(kube.objects()["resourceVersion"], rv_before)
        w = WatchReader(resourceVersion=obj["metadata"]["resourceVersion"],
                        timeoutSeconds="1")
        self.assertTrue(w.done.wait(5))
        self.assertEqual([e for e in w.events if e["type"] != "BOOKMARK"], [])

    def test_noop_merge_patch_keeps_rv(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        out = kube.merge_patch(G, NS, IR, obj["metadata"]["name"],
                               {"spec": {"entryPoints": ["web"]}})
        self.assertEqual(out["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"])

    def test_generation_counts_spec_changes_only(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        name = obj["metadata"]["name"]
        out = kube.merge_patch(G, NS, IR, name, {"metadata": {"labels": {"a": "b"}}})
        self.assertEqual(out["metadata"]["generation"], 1)
        self.assertNotEqual(out["metadata"]["resourceVersion"],
                            obj["metadata"]["resourceVersion"])
        out = kube.merge_patch(G, NS, IR, name, {"spec": {"entryPoints": ["x"]}})
        self.assertEqual(out["metadata"]["generation"], 2)

    def test_resource_versions_are_one_global_counter(self):
        a = kube.create(G, NS, IR, ingressroute(uname()))
        b = kube.create(G, NS, "middlewares", {
            "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": uname("mw")}, "spec": {"headers": {}}})
        self.assertEqual(int(b["metadata"]["resourceVersion"]),
                         int(a["metadata"]["resourceVersion"]) + 1)

    def test_labels_and_annotations_stored_as_given(self):
        obj = ingressroute(uname(), labels={"app.kubernetes.io/managed-by": "canary-bridge"})
        obj["metadata"]["annotations"] = {"canary-bridge.io/source": "etcd canary/x",
                                          "note": "a\nb ` \" ünï"}
        out = kube.create(G, NS, IR, obj)
        self.assertEqual(out["metadata"]["labels"], obj["metadata"]["labels"])
        self.assertEqual(kube.get(G, NS, IR, obj["metadata"]["name"])["metadata"][
            "annotations"], obj["metadata"]["annotations"])

    def test_invalid_metadata_is_422(self):
        st, _, body = kube.request("POST", kube.path(G, NS, IR), ingressroute("Bad_Name"))
        self.assertEqual(st, 422)
        self.assertIn(("metadata.name", "FieldValueInvalid"), causes(body))
        st, _, body = kube.request("POST", kube.path(G, NS, IR),
                                   ingressroute(uname(), labels={"a": "bad value!"}))
        self.assertEqual(st, 422)
        self.assertIn(("metadata.labels", "FieldValueInvalid"), causes(body))

    def test_validation_on_put_and_patch_too(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        name = obj["metadata"]["name"]
        obj["spec"]["routes"][0]["services"][0]["weight"] = "ten"
        st, _, _ = kube.request("PUT", kube.path(G, NS, IR, name), obj)
        self.assertEqual(st, 422)
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, name), [
            {"op": "replace", "path": "/spec/routes/0/services/1/weight", "value": -5}],
            "application/json-patch+json")
        self.assertEqual(st, 422)
        self.assertEqual(causes(body), [("spec.routes[0].services[1].weight",
                                         "FieldValueInvalid")])
        self.assertEqual(kube.get(G, NS, IR, name)["metadata"]["resourceVersion"],
                         obj["metadata"]["resourceVersion"])

    def test_schema_details(self):
        name = uname()
        ok = ingressroute(name, observability={})
        ok["spec"]["routes"][0]["services"][0]["port"] = "http"       # int-or-string
        del ok["spec"]["routes"][0]["kind"]                             # optional in v3.7
        out = kube.create(G, NS, IR, ok)
        route = out["spec"]["routes"][0]
        self.assertEqual(route["observability"], {"traceVerbosity": "minimal"})   # default
        self.assertEqual(route["services"][0]["port"], "http")
        bad = ingressroute(uname())
        bad["spec"]["routes"][0]["services"][0]["port"] = True
        st, _, body = kube.request("POST", kube.path(G, NS, IR), bad)
        self.assertEqual(causes(body), [("spec.routes[0].services[0].port",
                                         "FieldValueTypeInvalid")])
        mw = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
              "metadata": {"name": uname("mw")},
              "spec": {"headers": {"customRequestHeaders": {"X-Canary": "1", "X-Del": ""}}}}
        self.assertEqual(kube.create(G, NS, "middlewares", mw)["spec"], mw["spec"])
        mw["metadata"]["name"] = uname("mw")
        mw["spec"]["headers"]["customRequestHeaders"]["X-Num"] = 5
        st, _, body = kube.request("POST", kube.path(G, NS, "middlewares"), mw)
        self.assertEqual(causes(body), [("spec.headers.customRequestHeaders.X-Num",
                                         "FieldValueTypeInvalid")])
        mw["spec"] = {"addPrefix": {"prefix": "no-slash"}}                # CEL rule
        st, _, body = kube.request("POST", kube.path(G, NS, "middlewares"), mw)
        self.assertEqual(st, 422)
        self.assertIn("must start with a '/'", body["message"])

    def test_v2_group_requires_route_kind(self):
        obj = ingressroute(uname(), group="traefik.containo.us")
        del obj["spec"]["routes"][0]["kind"]
        st, _, body = kube.request("POST", kube.path("traefik.containo.us", NS, IR), obj)
        self.assertEqual(st, 422)
        self.assertEqual(causes(body), [("spec.routes[0].kind", "FieldValueRequired")])
        obj["spec"]["routes"][0]["kind"] = "Rule"
        self.assertEqual(kube.create("traefik.containo.us", NS, IR, obj)["apiVersion"],
                         "traefik.containo.us/v1alpha1")
        self.assertIsNone(kube.get(G, NS, IR, obj["metadata"]["name"]))   # separate store

    def test_create_with_resource_version_is_500(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        obj["metadata"]["name"] = uname()
        st, _, body = kube.request("POST", kube.path(G, NS, IR), obj)
        self.assertEqual((st, body["reason"]), (500, "InternalError"))
        self.assertIn("resourceVersion should not be set on objects to be created",
                      body["message"])

    def test_create_in_missing_namespace_is_404_about_the_namespace(self):
        # NamespaceLifecycle admission: before schema validation, for every namespaced kind.
        for obj in (ingressroute(uname()), ingressroute(uname(), weights=("ten",))):
            st, _, body = kube.request("POST", kube.path(G, "nowhere", IR), obj)
            self.assertEqual((st, body), (404, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": 'namespaces "nowhere" not found', "reason": "NotFound",
                "details": {"name": "nowhere", "kind": "namespaces"}, "code": 404}))
        st, _, body = kube.request("POST", "/api/v1/namespaces/nowhere/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}})
        self.assertEqual((st, body["details"]["kind"]), (404, "namespaces"))
        st, _, body = kube.request(
            "PATCH", kube.path(G, "nowhere", IR, "x", fieldManager="t"),
            ingressroute("x"), content_type="application/apply-patch+yaml")
        self.assertEqual((st, body["message"]), (404, 'namespaces "nowhere" not found'))

    def test_namespace_once_created_is_accepted(self):
        kube.create_namespace("team-a")
        out = kube.create(G, "team-a", IR, ingressroute(uname()))
        self.assertEqual(out["metadata"]["namespace"], "team-a")
        obj = ingressroute(uname())
        obj["metadata"]["namespace"] = "elsewhere"
        st, _, body = kube.request("POST", kube.path(G, "team-a", IR), obj)
        self.assertEqual((st, body["reason"]), (400, "BadRequest"))

    def test_managed_fields_per_field_manager_with_time(self):
        name = uname()
        kube.create(G, NS, IR, ingressroute(name), fieldManager="bridge-a")
        cur = kube.get(G, NS, IR, name)
        cur["spec"]["routes"][0]["services"][0]["weight"] = 50
        out = kube.put(G, NS, IR, cur, fieldManager="bridge-b")
        mf = {m["manager"]: m for m in out["metadata"]["managedFields"]}
        self.assertEqual(set(mf), {"bridge-a", "bridge-b"})
        self.assertIn("f:routes", mf["bridge-b"]["fieldsV1"]["f:spec"])
        self.assertNotIn("f:routes", mf["bridge-a"]["fieldsV1"]["f:spec"])
        self.assertEqual(mf["bridge-b"]["operation"], "Update")
        # A manager that changes fields it already owns gets its entry's time renewed
        # (times have whole seconds: wait for the clock to pass the stamped second).
        stamped = mf["bridge-b"]["time"]
        wait_until(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > stamped, 3,
                   what="the next second")
        out["spec"]["routes"][0]["services"][0]["weight"] = 60
        out = kube.put(G, NS, IR, out, fieldManager="bridge-b")
        mf = {m["manager"]: m for m in out["metadata"]["managedFields"]}
        self.assertGreater(mf["bridge-b"]["time"], stamped)
        self.assertEqual([m["manager"] for m in out["metadata"]["managedFields"]],
                         sorted(mf, key=lambda m: (mf[m]["time"], m)))

    def test_dry_run(self):
        name = uname()
        rv0 = kube.objects()["resourceVersion"]
        st, _, body = kube.request("POST", kube.path(G, NS, IR, dryRun="All"),
                                   ingressroute(name))
        self.assertEqual(st, 201)
        self.assertTrue(body["metadata"]["uid"])
        self.assertIsNone(kube.get(G, NS, IR, name))
        st, _, body = kube.request("POST", kube.path(G, NS, IR, dryRun="All"),
                                   ingressroute(name, weights=("ten",)))
        self.assertEqual(st, 422)                                    # still validated
        self.assertEqual(kube.objects()["resourceVersion"], rv0)
        obj = kube.create(G, NS, IR, ingressroute(name))
        obj["spec"]["entryPoints"] = ["changed"]
        st, _, body = kube.request("PUT", kube.path(G, NS, IR, name, dryRun="All"), obj)
        self.assertEqual((st, body["spec"]["entryPoints"]), (200, ["changed"]))
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, name, dryRun="All"),
                                   {"spec": {"entryPoints": ["p"]}},
                                   "application/merge-patch+json")
        self.assertEqual((st, body["spec"]["entryPoints"]), (200, ["p"]))
        st, _, _ = kube.request("DELETE", kube.path(G, NS, IR, name, dryRun="All"))
        self.assertEqual(st, 200)
        live = kube.get(G, NS, IR, name)
        self.assertEqual(live["spec"]["entryPoints"], ["web"])
        self.assertEqual(live["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"])
        st, _, _ = kube.request("POST", kube.path(G, NS, IR, dryRun="Maybe"), ingressroute(name))
        self.assertEqual(st, 400)

    def test_finalizers_delay_deletion(self):
        obj = ingressroute(uname())
        obj["metadata"]["finalizers"] = ["example.com/hold"]
        name = kube.create(G, NS, IR, obj)["metadata"]["name"]
        out = kube.delete(G, NS, IR, name)
        self.assertTrue(out["metadata"]["deletionTimestamp"])
        self.assertIsNotNone(kube.get(G, NS, IR, name))
        kube.merge_patch(G, NS, IR, name, {"metadata": {"finalizers": None}})
        self.assertIsNone(kube.get(G, NS, IR, name))

    def test_builtin_kinds_leases_events_services_crds(self):
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": uname("lease")},
                 "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
        L = "coordination.k8s.io"
        created = kube.create(L, "kube-system", "leases", lease)
        lease["spec"]["holderIdentity"] = "b"                     # no RV: allowed for leases
        self.assertEqual(kube.put(L, "kube-system", "leases", lease)["spec"]["holderIdentity"],
                         "b")
        lease["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        st, _, body = kube.request("PUT", kube.path(L, "kube-system", "leases",
                                                    lease["metadata"]["name"]), lease)
        self.assertEqual((st, body["reason"]), (409, "Conflict"))
        self.assertIn('leases.coordination.k8s.io "%s"' % lease["metadata"]["name"],
                      body["message"])
        ev = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": uname("ev")},
              "reason": "Synced", "message": "ok", "involvedObject": {"kind": "IngressRoute"}}
        self.assertEqual(kube.create("", NS, "events", ev)["reason"], "Synced")
        ev2 = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": uname("ev")}, "reason": "Synced", "note": "ok"}
        self.assertEqual(kube.create("events.k8s.io", NS, "events", ev2)["note"], "ok")
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": uname("svc")},
               "spec": {"ports": [{"name": "http", "port": 80}]}}
        self.assertEqual(kube.create("", NS, "services", svc)["spec"]["ports"][0]["port"], 80)
        eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": uname("eps"),
                            "labels": {"kubernetes.io/service-name": svc["metadata"]["name"]}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
               "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]}
        kube.create("discovery.k8s.io", NS, "endpointslices", eps)
        st, _, body = kube.request("GET", kube.path(
            "discovery.k8s.io", NS, "endpointslices",
            labelSelector="kubernetes.io/service-name=" + svc["metadata"]["name"]))
        self.assertEqual((st, [o["metadata"]["name"] for o in body["items"]]),
                         (200, [eps["metadata"]["name"]]))
        crd = kube.get("apiextensions.k8s.io", None, "customresourcedefinitions",
                       "ingressroutes.traefik.io")
        self.assertIn({"type": "Established", "status": "True"},
                      [{k: c[k] for k in ("type", "status")} for c in crd["status"][
                          "conditions"]])


class TestApply(unittest.TestCase):
    def path(self, name, **q):
        return kube.path(G, NS, IR, name, **q)

    def test_apply_requires_field_manager(self):
        name = uname()
        st, _, body = kube.request("PATCH", self.path(name), ingressroute(name),
                                   "application/apply-patch+yaml")
        self.assertEqual((st, body["reason"]), (422, "Invalid"))
        self.assertIn("fieldManager: Required value: is required for apply patch",
                      body["message"])

    def test_apply_creates_then_updates_and_noop(self):
        name = uname()
        st, _, body = kube.request("PATCH", self.path(name, fieldManager="cb"),
                                   ingressroute(name), "application/apply-patch+yaml")
        self.assertEqual(st, 201)
        self.assertEqual(body["metadata"]["managedFields"][0]["operation"], "Apply")
        again = kube.apply(G, NS, IR, ingressroute(name), field_manager="cb")
        self.assertEqual(again["metadata"]["resourceVersion"], body["metadata"]["resourceVersion"])
        changed = kube.apply(G, NS, IR, ingressroute(name, weights=(50, 50)), field_manager="cb")
        self.assertEqual(changed["spec"]["routes"][0]["services"][1]["weight"], 50)
        self.assertEqual(changed["metadata"]["generation"], 2)

    def test_apply_yaml_body_and_go_yaml_escapes(self):
        name = uname()
        text = ("apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\nmetadata:\n  name: %s\n"
                "spec:\n  routes:\n  - match: Host(`a`)\n    kind: Rule\n" % name)
        st, _, body = kube.request("PATCH", self.path(name, fieldManager="cb"), text,
                                   "application/apply-patch+yaml")
        self.assertEqual(st, 201, body)
        bad = '{"apiVersion":"traefik.io/v1alpha1","kind":"IngressRoute","metadata":{"name":' \
              '"%s"},"spec":{"routes":[{"match":"PathPrefix(`\\/x`)","kind":"Rule"}]}}' % name
        st, _, body = kube.request("PATCH", self.path(name, fieldManager="cb"), bad,
                                   "application/apply-patch+yaml")
        self.assertEqual(st, 400)
        self.assertIn("found unknown escape character", body["message"])

    def test_apply_conflict_and_force(self):
        name = uname()
        kube.create(G, NS, IR, ingressroute(name))                     # manager from UA
        kube.merge_patch(G, NS, IR, name, {"spec": {"entryPoints": ["x"]}},
                         fieldManager="someone-else")
        st, _, body = kube.request("PATCH", self.path(name, fieldManager="cb"),
                                   ingressroute(name, weights=(1, 99)),
                                   "application/apply-patch+yaml")
        self.assertEqual((st, body["reason"]), (409, "Conflict"))
        self.assertEqual({c["reason"] for c in body["details"]["causes"]},
                         {"FieldManagerConflict"})
        self.assertIn(".spec.routes", {c["field"] for c in body["details"]["causes"]})
        out = kube.apply(G, NS, IR, ingressroute(name, weights=(1, 99)), field_manager="cb",
                         force=True)
        self.assertEqual(out["spec"]["routes"][0]["services"][0]["weight"], 1)
        managers = {m["manager"]: m for m in out["metadata"]["managedFields"]}
        self.assertIn("f:routes", managers["cb"]["fieldsV1"]["f:spec"])

    def test_apply_removes_fields_it_no_longer_sets_but_keeps_others(self):
        name = uname()
        obj = ingressroute(name)
        obj["spec"]["tls"] = {"secretName": "s"}
        kube.apply(G, NS, IR, obj, field_manager="cb")
        kube.merge_patch(G, NS, IR, name, {"metadata": {"labels": {"gitops": "yes"}}},
                         fieldManager="argo")
        del obj["spec"]["tls"]
        out = kube.apply(G, NS, IR, obj, field_manager="cb")
        self.assertNotIn("tls", out["spec"])
        self.assertEqual(out["metadata"]["labels"], {"gitops": "yes"})

    def test_rejected_apply_leaves_stored_object_alone(self):
        name = uname()
        obj = ingressroute(name)
        obj["spec"]["tls"] = {"secretName": "s"}
        first = kube.apply(G, NS, IR, obj, field_manager="cb")
        st, _, body = kube.request("PATCH", kube.path(G, NS, IR, name, fieldManager="cb"), {
            "apiVersion": obj["apiVersion"], "kind": "IngressRoute",
            "metadata": {"name": name}}, "application/apply-patch+yaml")
        self.assertEqual(st, 422)               # every spec field dropped: spec is required
        self.assertEqual(causes(body), [("spec", "FieldValueRequired")])
        self.assertEqual(kube.get(G, NS, IR, name)["spec"], first["spec"])

    def test_forced_apply_shares_fields_with_equal_values(self):
        name = uname()
        kube.create(G, NS, IR, ingressroute(name), fieldManager="creator")
        out = kube.apply(G, NS, IR, ingressroute(name, weights=(1, 99)), field_manager="cb")
        managers = {m["manager"]: m["fieldsV1"] for m in out["metadata"]["managedFields"]}
        self.assertIn("f:routes", managers["cb"]["f:spec"])
        self.assertNotIn("f:routes", managers["creator"]["f:spec"])     # taken by force
        self.assertIn("f:entryPoints", managers["creator"]["f:spec"])   # same value: shared
        self.assertIn("f:entryPoints", managers["cb"]["f:spec"])

    def test_force_on_non_apply_patch_is_422(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        st, _, body = kube.request("PATCH", self.path(obj["metadata"]["name"], force="true"),
                                   {"spec": {}}, "application/merge-patch+json")
        self.assertEqual(st, 422)


class TestListAndSelectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ns = uname("sel")
        kube.create_namespace(cls.ns)
        kube.create_namespace(cls.ns + "-other")
        for name, labels in (("a", {"app": "shop", "tier": "web"}), ("b", {"app": "shop"}),
                             ("c", {"app": "cart", "tier": "web"}), ("d", None)):
            kube.create(G, cls.ns, IR, ingressroute(name, labels=labels))
        kube.create(G, cls.ns + "-other", IR, ingressroute("e", labels={"app": "shop"}))

    def names(self, sel, ns=None):
        out = kube.list(G, ns or self.ns, IR, label_selector=sel)
        return [i["metadata"]["name"] for i in out["items"]]

    def test_label_selectors(self):
        self.assertEqual(self.names("app=shop"), ["a", "b"])
        self.assertEqual(self.names("app==shop"), ["a", "b"])
        self.assertEqual(self.names("app!=shop"), ["c", "d"])
        self.assertEqual(self.names("tier"), ["a", "c"])
        self.assertEqual(self.names("!tier"), ["b", "d"])
        self.assertEqual(self.names("app=shop,tier=web"), ["a"])
        self.assertEqual(self.names("app in (shop, cart),!tier"), ["b"])
        self.assertEqual(self.names("app notin (shop)"), ["c", "d"])
        st, _, body = kube.request("GET", kube.path(G, self.ns, IR, labelSelector="a=(b"))
        self.assertEqual((st, body["reason"]), (400, "BadRequest"))

    def test_list_shape_and_cluster_wide(self):
        out = kube.list(G, self.ns, IR)
        self.assertEqual((out["apiVersion"], out["kind"]), ("traefik.io/v1alpha1",
                                                            "IngressRouteList"))
        self.assertEqual(out["metadata"]["resourceVersion"], kube.objects()["resourceVersion"])
        self.assertTrue(all(i["kind"] == "IngressRoute" for i in out["items"]))
        allns = kube.list(G, None, IR, label_selector="app=shop")
        got = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in allns["items"]}
        self.assertTrue({(self.ns, "a"), (self.ns, "b"), (self.ns + "-other", "e")} <= got)

    def test_field_selector_and_pagination(self):
        out = kube.list(G, self.ns, IR, fieldSelector="metadata.name=c")
        self.assertEqual([i["metadata"]["name"] for i in out["items"]], ["c"])
        page1 = kube.list(G, self.ns, IR, limit=3)
        self.assertEqual(len(page1["items"]), 3)
        self.assertEqual(page1["metadata"]["remainingItemCount"], 1)
        page2 = kube.list(G, self.ns, IR, limit=3, **{"continue": page1["metadata"]["continue"]})
        self.assertEqual([i["metadata"]["name"] for i in page2["items"]], ["d"])
        self.assertNotIn("continue", page2["metadata"])


class TestDiscovery(unittest.TestCase):
    def get(self, path):
        st, _, body = kube.request("GET", path)
        self.assertEqual(st, 200, path)
        return body

    def test_discovery_documents(self):
        self.assertEqual(self.get("/version")["gitVersion"], "v1.28.0")
        self.assertEqual(self.get("/api")["versions"], ["v1"])
        core = {r["name"] for r in self.get("/api/v1")["resources"]}
        self.assertTrue({"namespaces", "events", "services"} <= core)
        groups = {g["name"]: g for g in self.get("/apis")["groups"]}
        for g in ("traefik.io", "traefik.containo.us", "coordination.k8s.io", "events.k8s.io",
                  "discovery.k8s.io"):
            self.assertIn(g, groups)
        self.assertEqual(groups["traefik.io"]["preferredVersion"]["groupVersion"],
                         "traefik.io/v1alpha1")
        self.assertEqual(self.get("/apis/traefik.io")["kind"], "APIGroup")
        rl = self.get("/apis/traefik.io/v1alpha1")
        res = {r["name"]: r for r in rl["resources"]}
        self.assertEqual(len(res), 10)
        ir = res["ingressroutes"]
        self.assertEqual((ir["kind"], ir["singularName"], ir["namespaced"]),
                         ("IngressRoute", "ingressroute", True))
        self.assertTrue({"get", "list", "watch", "create", "update", "patch", "delete"}
                        <= set(ir["verbs"]))
        v2 = {r["name"] for r in self.get("/apis/traefik.containo.us/v1alpha1")["resources"]}
        self.assertEqual(len(v2), 9)
        self.assertNotIn("serverstransporttcps", v2)
        self.assertIn("leases", {r["name"] for r in self.get(
            "/apis/coordination.k8s.io/v1")["resources"]})
        self.assertIn("endpointslices", {r["name"] for r in self.get(
            "/apis/discovery.k8s.io/v1")["resources"]})
        st, _, _ = kube.request("GET", "/openapi/v3")
        self.assertEqual(st, 404)

    def test_groups_option(self):
        with tempfile.TemporaryDirectory() as d, KubeAPI(d, groups=["traefik.io"]) as k:
            st, _, body = k.request("GET", "/apis")
            self.assertNotIn("traefik.containo.us", [g["name"] for g in body["groups"]])
            st, _, body = k.request("GET", k.path("traefik.containo.us", NS, IR))
            self.assertEqual((st, body), (404, "404 page not found\n"))
        with tempfile.TemporaryDirectory() as d, KubeAPI(d, groups="traefik.containo.us") as k:
            st, _, _ = k.request("GET", k.path("traefik.io", NS, IR))
            self.assertEqual(st, 404)
            st, _, _ = k.request("GET", k.path("traefik.containo.us", NS, IR))
            self.assertEqual(st, 200)

    def test_files_written(self):
        import yaml
        with open(kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        self.assertEqual(kc["current-context"], "test")
        self.assertEqual(kc["clusters"][0]["cluster"]["server"], kube.url)
        self.assertEqual(kc["users"][0]["user"]["token"], kube.token)
        out = subprocess.run(["openssl", "verify", "-CAfile", kube.ca,
                              os.path.join(kube.dir, "server.crt")], capture_output=True,
                             text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                              os.path.join(kube.dir, "server.crt")], capture_output=True,
                             text=True)
        self.assertIn("IP Address:127.0.0.1", out.stdout)
        self.assertIn("DNS:localhost", out.stdout)


class TestWatch(unittest.TestCase):
    def test_events_after_rv_in_order_then_live(self):
        name = uname()
        start_rv = kube.objects()["resourceVersion"]
        obj = kube.create(G, NS, IR, ingressroute(name))
        kube.merge_patch(G, NS, IR, name, {"spec": {"entryPoints": ["x"]}})
        w = WatchReader(resourceVersion=start_rv, fieldSelector="metadata.name=" + name)
        evs = w.wait(2)
        self.assertEqual([e["type"] for e in evs], ["ADDED", "MODIFIED"])
        self.assertEqual(evs[0]["object"]["metadata"]["resourceVersion"],
                         obj["metadata"]["resourceVersion"])
        self.assertEqual(evs[1]["object"]["spec"]["entryPoints"], ["x"])
        kube.delete(G, NS, IR, name)
        ev = w.wait(3)[2]
        self.assertEqual(ev["type"], "DELETED")
        self.assertGreater(int(ev["object"]["metadata"]["resourceVersion"]),
                           int(evs[1]["object"]["metadata"]["resourceVersion"]))
        kube.close_watches()
        self.assertTrue(w.done.wait(5))
        self.assertIsNone(w.error)

    def test_rv_zero_starts_with_current_objects(self):
        ns = uname("w0")
        kube.create_namespace(ns)
        kube.create(G, ns, IR, ingressroute("one"))
        w = WatchReader(ns=ns, resourceVersion="0")
        self.assertEqual(w.wait(1)[0]["type"], "ADDED")
        wait_watching()
        kube.create(G, ns, IR, ingressroute("two"))
        ev = w.wait(2)[1]
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "two"))
        kube.close_watches()
        self.assertTrue(w.done.wait(5))

    def test_cluster_wide_watch_and_label_selector_transitions(self):
        name = uname()
        kube.create_namespace("ns-x")
        kube.create_namespace("ns-y")
        rv = kube.objects()["resourceVersion"]
        w = WatchReader(ns=None, resourceVersion=rv, labelSelector="canary=yes")
        kube.create(G, "ns-x", IR, ingressroute(name, labels={"canary": "yes"}))
        kube.merge_patch(G, "ns-x", IR, name, {"metadata": {"labels": {"canary": "no"}}})
        kube.merge_patch(G, "ns-x", IR, name, {"metadata": {"labels": {"canary": "yes"}}})
        kube.create(G, "ns-y", IR, ingressroute(uname(), labels={"canary": "no"}))
        evs = w.wait(3)
        self.assertEqual([e["type"] for e in evs], ["ADDED", "DELETED", "ADDED"])
        self.assertEqual(evs[1]["object"]["metadata"]["labels"], {"canary": "yes"})
        kube.close_watches()
        self.assertTrue(w.done.wait(5))
        self.assertEqual(len(w.events), 3)

    def test_timeout_seconds_ends_cleanly_with_bookmark(self):
        t0 = time.monotonic()
        w = WatchReader(resourceVersion=kube.objects()["resourceVersion"], timeoutSeconds="1",
                        allowWatchBookmarks="true")
        self.assertTrue(w.done.wait(5))
        self.assertIsNone(w.error)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual([e["type"] for e in w.events], ["BOOKMARK"])
        self.assertEqual(w.events[0]["object"]["kind"], "IngressRoute")
        self.assertTrue(w.events[0]["object"]["metadata"]["resourceVersion"].isdigit())

    def test_bookmark_on_request(self):
        w = WatchReader(resourceVersion=kube.objects()["resourceVersion"],
                        allowWatchBookmarks="true")
        wait_watching()
        kube.bookmark()
        self.assertEqual(w.wait(1)[0]["type"], "BOOKMARK")
        kube.close_watches()
        self.assertTrue(w.done.wait(5))

    def test_compact_gives_410_expired_and_ends_watches(self):
        old_rv = kube.objects()["resourceVersion"]
        kube.create(G, NS, IR, ingressroute(uname()))
        w = WatchReader(resourceVersion=kube.objects()["resourceVersion"])
        wait_watching()
        kube.compact()
        self.assertTrue(w.done.wait(5))                  # open streams end cleanly
        self.assertIsNone(w.error)
        st, _, _ = kube.request("GET", kube.path(G, NS, IR, watch="1", resourceVersion=old_rv))
        self.assertEqual(st, 200)                        # HTTP 200, not 410
        evs = list(kube.watch(G, NS, IR, resourceVersion=old_rv))
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["type"], "ERROR")
        st = evs[0]["object"]
        self.assertEqual((st["kind"], st["reason"], st["code"]), ("Status", "Expired", 410))
        self.assertTrue(st["message"].startswith("too old resource version: %s (" % old_rv))
        # a watch from the list RV works after compaction
        rv = kube.list(G, NS, IR)["metadata"]["resourceVersion"]
        self.assertEqual(list(kube.watch(G, NS, IR, resourceVersion=rv, timeoutSeconds="1")),
                         [])

    def test_history_limit_gives_410(self):
        with tempfile.TemporaryDirectory() as d, KubeAPI(d, history=3) as k:
            rv0 = k.list(G, NS, IR)["metadata"]["resourceVersion"]
            for i in range(5):
                k.create(G, NS, IR, ingressroute("h%d" % i))
            evs = list(k.watch(G, NS, IR, resourceVersion=rv0))
            self.assertEqual([(e["type"], e["object"]["code"]) for e in evs], [("ERROR", 410)])
            recent = int(k.list(G, NS, IR)["metadata"]["resourceVersion"]) - 2
            evs = list(k.watch(G, NS, IR, resourceVersion=str(recent), timeoutSeconds="1"))
            self.assertEqual([e["object"]["metadata"]["name"] for e in evs], ["h3", "h4"])

    def test_watch_list_initial_events_end_bookmark(self):
        ns = uname("wl")
        kube.create_namespace(ns)
        kube.create(G, ns, IR, ingressroute("one"))
        evs = list(kube.watch(G, ns, IR, sendInitialEvents="true", allowWatchBookmarks="true",
                              resourceVersionMatch="NotOlderThan", timeoutSeconds="1"))
        self.assertEqual(evs[0]["type"], "ADDED")
        self.assertEqual(evs[1]["type"], "BOOKMARK")
        self.assertEqual(evs[1]["object"]["metadata"]["annotations"],
                         {"k8s.io/initial-events-end": "true"})

    def test_client_disconnect_ends_watch(self):
        before = len(kube.watches())
        conn = kube.connection()
        conn.request("GET", kube.path(G, NS, IR, watch="1", resourceVersion=kube.objects()[
            "resourceVersion"]), headers={"Authorization": "Bearer " + kube.token})
        self.assertEqual(conn.getresponse().status, 200)
        wait_watching(before + 1)
        conn.close()
        wait_until(lambda: len(kube.watches()) == before, 5, what="server to drop the watch")

    def test_watch_is_chunked(self):
        conn = kube.connection()
        conn.request("GET", kube.path(G, NS, IR, watch="true", timeoutSeconds="1",
                                      resourceVersion=kube.objects()["resourceVersion"]),
                     headers={"Authorization": "Bearer " + kube.token})
        r = conn.getresponse()
        self.assertEqual(r.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(r.read(), b"")
        conn.request("GET", "/version")                         # connection still usable
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()


class TestFaultsAndLog(unittest.TestCase):
    def setUp(self):
        kube.clear_faults()

    tearDown = setUp

    def test_409_count(self):
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        name = obj["metadata"]["name"]
        rule = kube.fault(method="PUT", path_regex="/ingressroutes/%s$" % name, status=409,
                          count=2)
        self.assertEqual(rule["count"], 2)
        for _ in range(2):
            st, _, body = kube.request("PUT", kube.path(G, NS, IR, name), obj)
            self.assertEqual((st, body["reason"]), (409, "Conflict"))
            self.assertIn('ingressroutes.traefik.io "%s": the object has been modified' % name,
                          body["message"])
        self.assertEqual(kube.request("GET", kube.path(G, NS, IR, name))[0], 200)  # not PUT
        self.assertEqual(kube.faults(), [])
        st, _, _ = kube.request("PUT", kube.path(G, NS, IR, name), obj)
        self.assertEqual(st, 200)

    def test_429_retry_after_and_forever(self):
        kube.fault(path_regex="/ingressroutes", status=429, retry_after=7, count=-1)
        for _ in range(3):
            st, headers, body = kube.request("GET", kube.path(G, NS, IR))
            self.assertEqual((st, headers["Retry-After"], body["reason"]),
                             (429, "7", "TooManyRequests"))
        self.assertEqual(len(kube.faults()), 1)
        kube.clear_faults()
        self.assertEqual(kube.request("GET", kube.path(G, NS, IR))[0], 200)

    def test_500_503(self):
        kube.fault(status=503, path_regex="/middlewares")
        kube.fault(status=500, path_regex="/middlewares")
        self.assertEqual(kube.request("GET", kube.path(G, NS, "middlewares"))[2]["reason"],
                         "ServiceUnavailable")
        self.assertEqual(kube.request("GET", kube.path(G, NS, "middlewares"))[2]["code"], 500)

    def test_drop(self):
        name = uname()
        kube.fault(method="POST", action="drop")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            kube.request("POST", kube.path(G, NS, IR), ingressroute(name))
        self.assertIsNone(kube.get(G, NS, IR, name))              # not processed

    def test_drop_mid_truncates_after_processing(self):
        name = uname()
        kube.fault(method="POST", action="drop_mid")
        with self.assertRaises(http.client.IncompleteRead):
            kube.request("POST", kube.path(G, NS, IR), ingressroute(name))
        self.assertIsNotNone(kube.get(G, NS, IR, name))           # the write happened

    def test_status_after_processing(self):
        name = uname()
        kube.fault(method="POST", status=504, when="after")
        st, _, body = kube.request("POST", kube.path(G, NS, IR), ingressroute(name))
        self.assertEqual((st, body["reason"]), (504, "Timeout"))
        self.assertIsNotNone(kube.get(G, NS, IR, name))

    def test_hang_and_delay(self):
        kube.fault(method="GET", path_regex="/ingressroutes/hang-me", action="hang")
        t0 = time.monotonic()
        with self.assertRaises(socket.timeout):
            kube.request("GET", kube.path(G, NS, IR, "hang-me"), timeout=0.5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)
        kube.fault(method="GET", path_regex="/ingressroutes/slow", delay_ms=300)
        t0 = time.monotonic()
        st, _, _ = kube.request("GET", kube.path(G, NS, IR, "slow"))
        self.assertEqual(st, 404)                                  # then proceeds normally
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        log = kube.requests()
        hung = [e for e in log if e["path"].endswith("/hang-me")][-1]
        self.assertIsNotNone(hung["fault"])

    def test_bad_fault_rule_is_400(self):
        st, _, _ = kube.request("POST", "/_test/faults", {"action": "explode"}, token=None)
        self.assertEqual(st, 400)

    def test_request_log(self):
        kube.clear_requests()
        self.assertEqual(kube.requests(), [])
        name = uname()
        conn = kube.connection()
        hdrs = {"Authorization": "Bearer " + kube.token, "User-Agent": "cb-test/1.0",
                "Content-Type": "application/json"}
        import json
        conn.request("POST", kube.path(G, NS, IR, fieldManager="m"),
                     json.dumps(ingressroute(name)), hdrs)
        conn.getresponse().read()
        conn.request("GET", kube.path(G, NS, IR, name), headers=hdrs)
        conn.getresponse().read()
        conn.close()
        log = kube.requests(clear=True)
        self.assertEqual([(e["method"], e["status"]) for e in log], [("POST", 201),
                                                                     ("GET", 200)])
        post = log[0]
        self.assertEqual(post["path"], "/apis/traefik.io/v1alpha1/namespaces/default/"
                                       "ingressroutes")
        self.assertEqual(post["query"], {"fieldManager": "m"})
        self.assertEqual(post["body"]["metadata"]["name"], name)
        self.assertEqual(post["content_type"], "application/json")
        self.assertEqual(post["user_agent"], "cb-test/1.0")
        self.assertLessEqual(post["t"], post["t_done"])
        self.assertLess(post["seq"], log[1]["seq"])
        self.assertEqual(post["conn"], log[1]["conn"])          # keep-alive reused
        self.assertEqual(kube.requests(), [])

    def test_keepalive_latency(self):
        """TCP_NODELAY + one write per response: no ~40 ms delayed-ACK stalls."""
        obj = kube.create(G, NS, IR, ingressroute(uname()))
        name = obj["metadata"]["name"]
        conn = kube.connection()
        hdrs = {"Authorization": "Bearer " + kube.token, "Content-Type": "application/json"}
        import json
        times = []
        for i in range(30):
            obj["spec"]["routes"][0]["services"][0]["weight"] = i
            body = json.dumps(obj)
            t0 = time.perf_counter()
            conn.request("PUT", kube.path(G, NS, IR, name), body, hdrs)
            r = conn.getresponse()
            obj = json.loads(r.read())
            times.append(time.perf_counter() - t0)
            self.assertEqual(r.status, 200)
        conn.close()
        self.assertLess(statistics.median(times), 0.02, times)


@unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed")
class TestKubectl(unittest.TestCase):
    def kubectl(self, *args, input=None, ok=True):
        p = subprocess.run(["kubectl", "--kubeconfig", kube.kubeconfig] + list(args),
                           input=input, capture_output=True, text=True, timeout=60)
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_get_apply_patch_delete(self):
        import yaml
        name = uname("kc")
        manifest = yaml.safe_dump(ingressroute(name, labels={"app": "kc"}))
        self.assertIn("created", self.kubectl("apply", "-f", "-", input=manifest).stdout)
        out = self.kubectl("get", "ingressroutes.traefik.io", "-A").stdout
        self.assertRegex(out, r"(?m)^default\s+%s\s+\d+s$" % name)
        live = yaml.safe_load(self.kubectl("get", "ingressroute", name, "-o", "yaml").stdout)
        self.assertEqual(live["spec"], ingressroute(name)["spec"])
        self.kubectl("patch", "ingressroute", name, "--type", "merge", "-p",
                     '{"spec":{"routes":[{"match":"Host(`k`)","kind":"Rule","services":'
                     '[{"name":"s","port":80,"weight":3}]}]}}')
        self.assertEqual(kube.get(G, NS, IR, name)["spec"]["routes"][0]["services"][0][
            "weight"], 3)
        p = self.kubectl("patch", "ingressroute", name, "--type", "merge", "-p",
                         '{"spec":{"routes":[{"match":"Host(`k`)","kind":"Rule","services":'
                         '[{"name":"s","port":80,"weight":"ten"}]}]}}', ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("Invalid value", p.stderr)
        manifest2 = manifest.replace("weight: 90", "weight: 80")
        self.assertIn("configured", self.kubectl("apply", "-f", "-", input=manifest2).stdout)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest2)
        self.assertIn("deleted", self.kubectl("delete", "ingressroute", name).stdout)
        self.assertIsNone(kube.get(G, NS, IR, name))
        p = self.kubectl("get", "ingressroute", name, ok=False)
        self.assertIn('ingressroutes.traefik.io "%s" not found' % name, p.stderr)


if __name__ == "__main__":
    unittest.main()
