//! A scripted Kubernetes API server for call-sequence tests: it answers a kube `Client` through
//! tower-test's mock service, records every call in order, and serves lists from fixed objects.
//! The parent object is kept like the real server keeps it: writes to it bump its
//! resourceVersion and are refused with 409 when they carry an older one.

use std::collections::{BTreeMap, VecDeque};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One request the client made.
#[derive(Clone, Debug)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// URL path.
    pub path: String,
    /// URL query.
    pub query: String,
    /// JSON body (Null when empty).
    pub body: Value,
}

impl Call {
    /// `METHOD path`, the form tests compare.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// True for anything but a read.
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// What the server holds and how it misbehaves.
#[derive(Default)]
pub struct ApiServer {
    /// Objects returned when a collection is listed, by resource plural.
    lists: BTreeMap<String, Vec<Value>>,
    /// Status codes to answer matching calls with, once each, in order.
    failures: VecDeque<(Method, String, u16)>,
    /// The object whose status subresource is patched, and its path.
    parent: Value,
    parent_path: String,
    /// Objects answered to a GET of their exact path.
    objects: BTreeMap<String, Value>,
}

impl ApiServer {
    /// Serves `objects` when `plural` is listed.
    pub fn with_list(mut self, plural: &str, objects: Vec<Value>) -> Self {
        self.lists
            .entry(plural.to_owned())
            .or_default()
            .extend(objects);
        self
    }

    /// Answers a GET of `path` with `object`.
    pub fn with_object(mut self, path: &str, object: Value) -> Self {
        self.objects.insert(path.to_owned(), object);
        self
    }

    /// Takes over `other`'s lists of the given plurals.
    pub fn merge_lists_from(mut self, mut other: ApiServer, plurals: &[&str]) -> Self {
        for plural in plurals {
            if let Some(objects) = other.lists.remove(*plural) {
                self.lists
                    .entry((*plural).to_owned())
                    .or_default()
                    .extend(objects);
            }
        }
        self
    }

    /// Keeps `parent` (a namespaced custom resource): served to a GET of its path, patched by
    /// merge patches of it and of its status.
    pub fn with_parent(mut self, parent: Value) -> Self {
        let kind = parent["kind"].as_str().unwrap_or_default().to_lowercase();
        self.parent_path = format!(
            "/apis/{}/namespaces/{}/{kind}s/{}",
            parent["apiVersion"].as_str().unwrap_or_default(),
            parent["metadata"]["namespace"].as_str().unwrap_or_default(),
            parent["metadata"]["name"].as_str().unwrap_or_default(),
        );
        self.parent = parent;
        self
    }

    /// Moves the parent on to a newer version, as another writer would.
    pub fn with_parent_changed(mut self, change: impl FnOnce(&mut Value)) -> Self {
        change(&mut self.parent);
        self.bump_parent_version();
        self
    }

    /// Answers the next `method` call to `path` with `code`.
    pub fn failing_once(mut self, method: Method, path: &str, code: u16) -> Self {
        self.failures.push_back((method, path.to_owned(), code));
        self
    }

    /// A client talking to this server, and the task that returns the recorded calls once every
    /// clone of the client is dropped.
    pub fn start(mut self) -> (Client, JoinHandle<Vec<Call>>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let task = tokio::spawn(async move {
            let mut calls = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let call = Call {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (code, answer) = self.answer(&call);
                calls.push(call);
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
            calls
        });
        (Client::new(service, "default"), task)
    }

    fn answer(&mut self, call: &Call) -> (StatusCode, Value) {
        let failing = self
            .failures
            .iter()
            .position(|(method, path, _)| *method == call.method && *path == call.path);
        if let Some(index) = failing {
            let (_, _, code) = self.failures.remove(index).unwrap();
            return failure(code);
        }
        let ok = StatusCode::OK;
        match call.method {
            Method::GET if self.objects.contains_key(&call.path) => {
                (ok, self.objects[&call.path].clone())
            }
            Method::GET if call.path == self.parent_path => (ok, self.parent.clone()),
            Method::GET => {
                let plural = call.path.rsplit('/').next().unwrap_or_default();
                let items = self.lists.get(plural).cloned().unwrap_or_default();
                (
                    ok,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::DELETE => (
                ok,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
            Method::PATCH
                if call.path == self.parent_path
                    || call.path == format!("{}/status", self.parent_path) =>
            {
                let expected = &call.body["metadata"]["resourceVersion"];
                if !expected.is_null() && *expected != self.parent["metadata"]["resourceVersion"] {
                    return failure(409);
                }
                if call.path.ends_with("/status") {
                    self.parent["status"] = call.body["status"].clone();
                } else {
                    let mut patch = call.body.clone();
                    if let Some(metadata) = patch["metadata"].as_object_mut() {
                        metadata.remove("resourceVersion");
                    }
                    merge(&mut self.parent, &patch);
                }
                self.bump_parent_version();
                (ok, self.parent.clone())
            }
            // Apply, create and replace answer with what was sent.
            _ => (ok, call.body.clone()),
        }
    }

    fn bump_parent_version(&mut self) {
        let version = &mut self.parent["metadata"]["resourceVersion"];
        let next = version
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        *version = Value::String(next.to_string());
    }
}

/// A Status answer with `code`.
fn failure(code: u16) -> (StatusCode, Value) {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    };
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("scripted {code}"), "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), status)
}

/// Applies a JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            target.as_object_mut().unwrap().remove(key);
        } else {
            merge(&mut target[key.as_str()], value);
        }
    }
}
