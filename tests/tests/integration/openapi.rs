//! `GET /openapi.json` and `GET /docs` against the real server: the document is OpenAPI 3.1,
//! names every route the router serves (and the router serves every route it names), gives every
//! operation its answers including a problem+json error, names a known scope wherever a token is
//! needed, and the reference page loads with no asset from outside.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{Backend, TestServer};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// Every (method, path) the document describes, with its operation.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap();
            resolve(document, document.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}")))
        }
        None => value,
    }
}

async fn fetch_document(server: &TestServer) -> Value {
    let response = server.client.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_names_exactly_the_routes_the_router_serves() {
    let server = TestServer::start(Backend::Sqlite).await;
    let document = fetch_document(&server).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."), "{}", document["openapi"]);
    assert_eq!(document["info"]["title"], "Colloquy");

    // The router is built from the handlers' annotations (`colloquy_api::routes()`), so its
    // routes are the ones its own document part names; the served document must hold them all.
    let (_router, router_document) = colloquy_api::routes().split_for_parts();
    let served: BTreeSet<(String, String)> =
        operations(&document).into_iter().map(|(m, p, _)| (m, p)).collect();
    let routed: BTreeSet<(String, String)> = operations(&serde_json::to_value(&router_document).unwrap())
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    assert!(routed.len() >= 40, "only {} routes", routed.len());
    assert_eq!(served, routed, "the served document and the router differ");

    // And the server answers every documented route with a handler, not the fallback's 404 or 405.
    for (method, path, operation) in operations(&document) {
        let mut url = path.clone();
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "path" {
                let name = parameter["name"].as_str().unwrap();
                let value = parameter["example"]
                    .as_str()
                    .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
                url = url.replace(&format!("{{{name}}}"), &value);
            }
        }
        assert!(!url.contains('{'), "{path}: a path parameter is not documented");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = server.client.request(method.clone(), server.url(&url)).send().await.unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed: {text}");
        assert!(!text.contains("this route was not found"), "{method} {path} is not routed: {text}");
    }
}

/// Routes registered beside `routes!` would be served without being documented; every route is
/// registered in `colloquy_api::routes()` through it.
#[test]
fn no_route_is_registered_outside_the_documented_table() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src");
    let mut files = vec![source];
    let mut offenders = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (number, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for call in [".route(", ".route_service(", ".nest_service(", ".merge(", "routing::"] {
                    if code.contains(call) {
                        offenders.push(format!("{}:{}: {code}", path.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "routes outside `routes!`:\n{}", offenders.join("\n"));
}

#[tokio::test]
async fn every_operation_documents_its_answers_errors_and_scope() {
    let server = TestServer::start(Backend::Sqlite).await;
    let document = fetch_document(&server).await;
    let scopes: BTreeSet<&str> = colloquy_infra::tokens::SCOPES.iter().copied().collect();
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (method, path, operation) in operations(&document) {
        let name = format!("{method} {path}");
        assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{name}: no tag");
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{name}: no responses"));
        assert!(responses.keys().any(|status| status.starts_with('2')), "{name}: no success answer");
        let mut problem_answers = 0;
        for (status, response) in responses {
            let response = resolve(&document, response);
            assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} {status}");
            let problem = &response["content"]["application/problem+json"];
            // `/readyz` answers its checks as JSON with 503; every other error is a problem.
            let is_error = status.starts_with('4') || status.starts_with('5');
            if is_error && (path.starts_with("/v1/") || !problem.is_null()) {
                problem_answers += 1;
                assert_eq!(
                    resolve(&document, &problem["schema"])["properties"]["type"]["type"],
                    "string",
                    "{name} {status}: not a problem+json answer"
                );
                let examples = problem["examples"].as_object().unwrap();
                for example in examples.values() {
                    let value = &resolve(&document, example)["value"];
                    assert_eq!(value["status"].as_u64().unwrap().to_string(), *status, "{name}: {value}");
                    assert!(value["type"].as_str().unwrap().starts_with("urn:colloquy:problem:"));
                }
            }
        }
        assert!(problem_answers > 0, "{name}: no problem+json error answer");
        assert!(responses.contains_key("500"), "{name}: no 500");

        if let Some(body) = operation.get("requestBody") {
            let schema = resolve(&document, &body["content"]["application/json"]["schema"]);
            assert!(schema.get("example").is_some(), "{name}: the request body has no example");
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{name}: a body but no {status}");
            }
        }

        let needed: Vec<&str> = operation["security"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|requirement| requirement["bearer"].as_array().unwrap())
            .map(|scope| scope.as_str().unwrap())
            .collect();
        if path.starts_with("/v1/") {
            assert_eq!(needed.len(), 1, "{name}: needs one scope, names {needed:?}");
            assert!(scopes.contains(needed[0]), "{name}: unknown scope {}", needed[0]);
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{name}: no {status}");
            }
            let forbidden = &responses["403"]["description"];
            assert!(forbidden.as_str().unwrap().contains(needed[0]), "{name}: 403 does not name the scope");
        } else {
            assert!(needed.is_empty(), "{name}: a public route that names a scope");
        }
    }
}

/// The document's scopes are the ones the handlers check, on reads and writes alike: a token with
/// only the documented scope is let through (not 403), and a token with another scope is refused
/// with 403 naming it. Each write is sent with its body's documented example, so that it reaches
/// the scope check.
#[tokio::test]
async fn the_documented_scope_is_the_one_each_operation_checks() {
    let server = TestServer::start(Backend::Sqlite).await;
    let document = fetch_document(&server).await;
    let contact = server.contact().await;
    let conversation = server.conversation().await;
    let mut tokens = std::collections::HashMap::new();
    for scope in colloquy_infra::tokens::SCOPES {
        let created = server
            .post("/v1/tokens", serde_json::json!({"name": format!("doc-{scope}"), "scopes": [scope]}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        tokens.insert(*scope, created.body["secret"].as_str().unwrap().to_owned());
    }
    let mut checked = 0;
    for (method, path, operation) in operations(&document) {
        if !path.starts_with("/v1/") || path.ends_with("/stream") {
            continue;
        }
        let scope = operation["security"][0]["bearer"][0].as_str().unwrap().to_owned();
        let other = colloquy_infra::tokens::SCOPES.iter().find(|s| **s != scope && **s != "admin").unwrap();
        let url = path
            .replace("/contacts/{id}", &format!("/contacts/{contact}"))
            .replace("{id}", &conversation)
            .replace("{message_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{correlation_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{contact_id}", &contact);
        // Required query parameters (a conversation's id is the one such today) take the
        // conversation's id, so the request reaches the scope check.
        let required: Vec<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query" && p["required"] == true)
            .map(|p| format!("{}={conversation}", p["name"].as_str().unwrap()))
            .collect();
        let url = if required.is_empty() { url } else { format!("{url}?{}", required.join("&")) };
        let example = operation.get("requestBody").map(|body| {
            resolve(&document, &body["content"]["application/json"]["schema"])["example"].clone()
        });
        let send = |secret: &str| {
            let mut request = server
                .client
                .request(method.to_uppercase().parse().unwrap(), server.url(&url))
                .bearer_auth(secret.to_owned());
            if let Some(example) = &example {
                request = request.json(example);
            }
            request.send()
        };
        // Let through: not a 401, nor a 403 for this scope (naming a participant by phone number
        // also needs `contacts:write`, to create its contact).
        let allowed = send(&tokens[scope.as_str()]).await.unwrap();
        let allowed_status = allowed.status();
        let allowed: Value = allowed.json().await.unwrap_or_default();
        let refused_for_it = allowed_status == StatusCode::FORBIDDEN
            && allowed["detail"].as_str().is_none_or(|detail| detail.contains(&format!("{scope:?}")));
        assert!(
            allowed_status != StatusCode::UNAUTHORIZED && !refused_for_it,
            "{method} {path} refuses a token with its documented scope {scope}: {allowed_status} {allowed}"
        );
        let refused = send(&tokens[other]).await.unwrap();
        let status = refused.status();
        let detail: Value = refused.json().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} lets a token with {other} through: {detail}"
        );
        assert!(
            detail["detail"].as_str().unwrap_or_default().contains(&format!("{scope:?}")),
            "{method} {path}: {detail}"
        );
        checked += usize::from(method != "get");
    }
    assert!(checked > 20, "only {checked} writes checked");
}

#[tokio::test]
async fn the_reference_page_is_html_that_loads_nothing_from_outside() {
    let server = TestServer::start(Backend::Sqlite).await;
    let response = server.client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger-ui") && page.contains("<title>Colloquy API reference</title>"), "{page}");

    let attributes = ["src=\"", "href=\"", "src='", "href='", "url("];
    let mut assets = Vec::new();
    for attribute in attributes {
        for (start, _) in page.match_indices(attribute) {
            // The page's `<base href="/docs/">` is where its relative links resolve, not an asset.
            if page[..start].ends_with("<base ") {
                assert!(page[start..].starts_with("href=\"/docs/\""));
                continue;
            }
            let rest = &page[start + attribute.len()..];
            let end = rest.find(['"', '\'', ')']).unwrap();
            assets.push(rest[..end].to_owned());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    for asset in &assets {
        assert!(
            !asset.starts_with("http:") && !asset.starts_with("https:") && !asset.starts_with("//"),
            "the page loads {asset} from outside"
        );
        // Relative to the page's base, `/docs/`.
        let url = if asset.starts_with('/') { asset.clone() } else { format!("/docs/{asset}") };
        let response = server.client.get(server.url(&url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }

    let initializer = server.client.get(server.url("/docs/swagger-initializer.js")).send().await.unwrap();
    assert_eq!(initializer.status(), StatusCode::OK);
    let initializer = initializer.text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    assert!(!initializer.contains("http://") && !initializer.contains("https://"), "{initializer}");

    let missing = server.client.get(server.url("/docs/no-such-file.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

/// The shared headers state the pattern the server holds them to, and the server keeps to it:
/// a value that matches is taken, one that does not is a 400.
#[tokio::test]
async fn shared_headers_state_the_patterns_the_server_enforces() {
    let server = TestServer::start(Backend::Sqlite).await;
    let document = fetch_document(&server).await;
    let open = &document["paths"]["/v1/conversations"]["post"]["parameters"];
    let pattern = |name: &str| -> regex::Regex {
        let parameter = open.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        regex::Regex::new(parameter["schema"]["pattern"].as_str().expect("a pattern")).unwrap()
    };
    let contact = server.contact().await;
    let body = serde_json::json!({"contact_id": contact, "channel": "sms"});
    let cases = [
        ("X-Correlation-Id", "0192f3c4-5a6b-7c8d-9e0f-1a2b3c4d5e6f", "not-a-uuid"),
        ("Idempotency-Key", "order-4711", "has space"),
        ("Colloquy-On-Behalf-Of", "agent-42", "agent 42"),
    ];
    for (header, good, bad) in cases {
        let rule = pattern(header);
        assert!(rule.is_match(good) && !rule.is_match(bad), "{header}: {rule}");
        let taken =
            server.call_with(Method::POST, "/v1/conversations", Some(body.clone()), &[(header, good)]).await;
        assert_eq!(taken.status, StatusCode::CREATED, "{header}: {:?}", taken.body);
        let refused =
            server.call_with(Method::POST, "/v1/conversations", Some(body.clone()), &[(header, bad)]).await;
        refused.assert_problem(StatusCode::BAD_REQUEST);
    }
    let patch = &document["paths"]["/v1/conversations/{id}"]["patch"]["parameters"];
    let if_match = patch.as_array().unwrap().iter().find(|p| p["name"] == "If-Match").unwrap();
    // `*` (an enum), or an ETag (a pattern): a value is valid when one alternative admits it.
    let alternatives = if_match["schema"]["oneOf"].as_array().unwrap();
    let admits = |value: &str| {
        alternatives.iter().any(|alternative| match alternative["pattern"].as_str() {
            Some(pattern) => regex::Regex::new(pattern).unwrap().is_match(value),
            None => alternative["enum"].as_array().unwrap().iter().any(|v| v == value),
        })
    };
    assert!(admits("\"3\"") && admits("*") && admits("W/\"12\"") && !admits("3") && !admits("**"));
    server.stop().await;
}
