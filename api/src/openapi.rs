//! The API's OpenAPI 3.1 document (`GET /openapi.json`) and its reference page (`GET /docs`).
//!
//! The document is generated from the code: each handler's `#[utoipa::path]` names its method,
//! path, parameters, body, answers and scope, and `crate::routes()` builds the router from those
//! same annotations (utoipa-axum's `routes!`), so a route cannot be served without being
//! documented. [`Conventions`] then adds what every operation shares, so the handlers list only
//! what is particular to them: the bearer scheme and the 401/403 of every scoped operation, the
//! 400/413/415 of bad input, `Idempotency-Key` on commands, `If-Match` where a 412 can answer,
//! and the 500. Error examples are made by [`ApiError`] itself, so they are real answers.
//!
//! `/docs` is Swagger UI from the `utoipa-swagger-ui` crate, built with its `vendored` feature:
//! the assets are compiled into the binary, so the page works with no internet access and the
//! build downloads nothing beyond crates.io.

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, OneOfBuilder, Schema, SchemaFormat};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Required, Type};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use colloquy_domain::validate::FieldError;
use colloquy_infra::tokens::SCOPES;

use crate::bounded::MAX_FILTER_VALUES;
use crate::extract::Path;
use crate::problem::ApiError;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The name of the security scheme in the document.
pub const BEARER: &str = "bearer";

/// An id used in examples.
const EXAMPLE_ID: &str = "0192f3c4-5a6b-7c8d-9e0f-1a2b3c4d5e6f";

/// The document's fixed parts: info, tags and the shared components. The paths come from the
/// router (see [`document`]).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Colloquy",
        description = "An event-sourced conversation engine: contacts, conversations with their \
            messages, an inbox, WhatsApp-style groups, and every change as an event.\n\n\
            Authenticate with `Authorization: Bearer <token>`; each operation names the scope it \
            needs. Errors are RFC 9457 `application/problem+json` bodies whose `type` is a stable \
            URN. Commands answer with the resource's version as `ETag` (send it back as \
            `If-Match` to refuse a lost update) and the global position of their last event as \
            `Colloquy-Position` (pass it as `min_position` to read your writes from lists). Every \
            POST accepts `Idempotency-Key`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(
        schemas(crate::problem::Problem, FieldError, crate::routes::inbox::LabelText),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Gone,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Unavailable,
            TooManyStreams,
            Internal
        )
    ),
    tags(
        (name = "contacts", description = "The people conversations are with."),
        (name = "conversations", description = "Conversations: workflow, assignment, labels, read receipts."),
        (name = "messages", description = "The messages of a conversation."),
        (name = "inbox", description = "Lists and counts of conversations, from the inbox read model."),
        (name = "groups", description = "WhatsApp-style groups managed as the inbox's own number."),
        (name = "events", description = "The global log, one stream's history, and the live stream."),
        (name = "timers", description = "What the process managers have scheduled: snooze wake-ups and SLA deadlines."),
        (name = "calendars", description = "Business calendars: a time zone, hours per weekday, holidays and special days; versioned."),
        (name = "sla", description = "SLA policies: targets per metric and priority, on a calendar or around the clock; versioned."),
        (name = "reports", description = "Reporting facts derived from the log, and the figures folded from them: summary, time series, breakdowns, distributions, live counts."),
        (name = "audit", description = "The audit log: every command's effect, who did it and through which request; exported whole as CSV or JSON Lines."),
        (name = "webhooks", description = "Subscriptions that receive the tenant's events over HTTP: signed CloudEvents, in order, retried, replayable."),
        (name = "tokens", description = "The admin API for the tenant's API tokens."),
        (name = "operations", description = "Health, readiness and metrics; no token needed."),
        (name = "reference", description = "This document and the page that renders it.")
    )
)]
pub struct ApiDoc;

/// The complete document: [`ApiDoc`], the paths of every route `crate::routes()` serves, and
/// [`Conventions`]. Built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_router, mut openapi) = crate::routes().split_for_parts();
        Conventions.modify(&mut openapi);
        openapi
    })
}

/// What the derives cannot say: the scopes a token may name, the body of bulk resolve (the list's
/// filters without its paging, which it refuses), a header that is a string or absent, and a body
/// that takes exactly one of its fields.
fn refine(mut document: serde_json::Value) -> serde_json::Value {
    if let Some(scopes) = document.pointer_mut("/components/schemas/CreateToken/properties/scopes") {
        scopes["items"] = serde_json::json!({"type": "string", "enum": SCOPES});
        scopes["minItems"] = serde_json::json!(1);
    }
    if let Some(mut resolve) = document.pointer("/components/schemas/InboxParams").cloned() {
        if let Some(properties) = resolve["properties"].as_object_mut() {
            for paging in ["sort", "order", "limit", "cursor"] {
                properties.remove(paging);
            }
            // One value or a list of them, each of its kind (the list's query takes them
            // comma-separated).
            for (field, item) in [
                ("status", "Status"),
                ("priority", "Priority"),
                ("channel", "Channel"),
                ("label", "LabelText"),
            ] {
                let description =
                    properties[field].pointer("/oneOf/1/description").cloned().unwrap_or_default();
                let item = serde_json::json!({"$ref": format!("#/components/schemas/{item}")});
                properties.insert(field.to_owned(), serde_json::json!({
                    "description": description,
                    "oneOf": [{"type": "null"}, item, {"type": "array", "items": item, "maxItems": MAX_FILTER_VALUES}],
                }));
            }
            properties["ids"]["maxItems"] = crate::routes::inbox::MAX_BULK.into();
        }
        resolve["description"] = "The conversations to close: `ids`, or the filters of the list \
            (`GET /v1/conversations`, with the same names), without its paging."
            .into();
        resolve["example"] = serde_json::json!({"label": "spam", "status": ["open", "pending"]});
        document["components"]["schemas"]["ResolveRequest"] = resolve;
        let body = "/paths/~1v1~1conversations~1resolve/post/requestBody/content/application~1json/schema";
        if let Some(schema) = document.pointer_mut(body) {
            *schema = serde_json::json!({"$ref": "#/components/schemas/ResolveRequest"});
        }
    }
    // A header that is absent or a position: not `null`, which `Option` would make it.
    if let Some(parameters) = document.pointer_mut("/paths/~1v1~1events~1stream/get/parameters") {
        for parameter in parameters.as_array_mut().into_iter().flatten() {
            if parameter["name"] == "Last-Event-ID" {
                parameter["schema"] = serde_json::json!({"type": "string", "pattern": "^[0-9]{1,18}$"});
            }
        }
    }
    if let Some(body) = document.pointer_mut("/components/schemas/HandleJoinRequests") {
        body["minProperties"] = 1.into();
        body["maxProperties"] = 1.into();
    }
    refine_business_time(&mut document);
    link_created_resources(&mut document);
    document
}

/// What a `String` stands for in the business-time types, stated so that a generated value is
/// one the server takes: an IANA zone name, a weekday, an `HH:MM` time, a warning's range; and
/// every UUID field held to the UUID's shape (a format alone is not asserted by every validator).
fn refine_business_time(document: &mut serde_json::Value) {
    let schemas = "/components/schemas";
    if let Some(zone) = document.pointer_mut(&format!("{schemas}/BusinessHours/properties/time_zone")) {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name()).collect();
        zone["enum"] = serde_json::json!(names);
    }
    if let Some(weekday) = document.pointer_mut(&format!("{schemas}/WeeklyInterval/properties/weekday")) {
        weekday["enum"] = serde_json::json!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
    }
    if let Some(time) = document.pointer_mut(&format!("{schemas}/LocalTime")) {
        time["pattern"] = "^([01][0-9]|2[0-3]):[0-5][0-9]$".into();
    }
    for (variant, minimum, maximum) in [(0, "before_seconds", None), (1, "percent", Some(99))] {
        // A warning is an object with exactly its one key.
        if let Some(shape) = document.pointer_mut(&format!("{schemas}/Warning/oneOf/{variant}")) {
            shape["additionalProperties"] = false.into();
        }
        let pointer = format!("{schemas}/Warning/oneOf/{variant}/properties/{minimum}");
        if let Some(field) = document.pointer_mut(&pointer) {
            field["minimum"] = 1.into();
            if let Some(maximum) = maximum {
                field["maximum"] = maximum.into();
            }
        }
    }
    fn uuids(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(object) => {
                if object.get("format").and_then(|f| f.as_str()) == Some("uuid")
                    && !object.contains_key("pattern")
                {
                    object.insert("pattern".into(), UUID_PATTERN.into());
                }
                object.values_mut().for_each(uuids);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(uuids),
            _ => {}
        }
    }
    if let Some(components) = document.pointer_mut(schemas) {
        uuids(components);
    }
}

/// A UUID in its text form.
const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// OpenAPI links from each operation that creates a resource (a POST answering 201 with the new
/// resource, whose `id` it carries) to every operation on that resource: on `P/{x}` and below,
/// where `P` is the creating path, with `x` the new `id` and `P`'s own path parameters as the
/// request gave them. A generated client (or Schemathesis's stateful phase) follows them from a
/// created conversation to its messages, and from a created message to its delivery reports.
fn link_created_resources(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object() else { return };
    let mut links = Vec::new();
    for (collection, item) in paths {
        if item.pointer("/post/responses/201").is_none() {
            continue;
        }
        let prefix = format!("{collection}/{{");
        for (path, target) in paths.iter().filter(|(path, _)| path.starts_with(&prefix)) {
            let rest = &path[prefix.len()..];
            let Some((name, _)) = rest.split_once('}') else { continue };
            let Some(methods) = target.as_object() else { continue };
            for method in
                methods.keys().filter(|m| ["get", "put", "post", "patch", "delete"].contains(&m.as_str()))
            {
                let mut parameters = serde_json::Map::new();
                parameters.insert(format!("path.{name}"), "$response.body#/id".into());
                for own in
                    collection.split('{').skip(1).filter_map(|part| part.split_once('}')).map(|(p, _)| p)
                {
                    parameters.insert(format!("path.{own}"), format!("$request.path.{own}").into());
                }
                let pointer = path.replace('~', "~0").replace('/', "~1");
                let link_name = format!("{method}{}", path.replace(['/', '{', '}'], "_"));
                let link = serde_json::json!({
                    "operationRef": format!("#/paths/{pointer}/{method}"),
                    "parameters": parameters,
                });
                links.push((collection.clone(), link_name, link));
            }
        }
    }
    for (collection, name, link) in links {
        if let Some(created) = document["paths"][&collection].pointer_mut("/post/responses/201") {
            created["links"][name] = link;
        }
    }
}

/// The document as JSON, as `GET /openapi.json` answers it.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let document = serde_json::to_value(document()).map(refine).unwrap_or_default();
        serde_json::to_string_pretty(&document).unwrap_or_default()
    })
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "reference",
    responses((status = 200, description = "This document.", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document_json()).into_response()
}

/// The API reference page (Swagger UI), rendering `/openapi.json`. Works offline: every asset
/// is served from this binary.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "reference",
    responses((status = 200, description = "The reference page.", content_type = "text/html", body = String))
)]
pub async fn docs() -> Response {
    swagger_file("index.html")
}

/// A file of the reference page (scripts, styles, icons).
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "reference",
    params(("file" = String, Path, description = "A file of the page.", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file, with its media type.", content(
            (String = "text/html"), (String = "text/css"), (String = "text/javascript"),
            (String = "text/plain"), (Vec<u8> = "image/png"))),
        (status = 404, response = NotFound)
    )
)]
pub async fn docs_file(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}

fn swagger_file(file: &str) -> Response {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        Arc::new(
            utoipa_swagger_ui::Config::new(["/openapi.json"])
                // Swagger UI otherwise sends the document to a public validator for a badge.
                .validator_url("none")
                .persist_authorization(true)
                .display_request_duration(true)
                .deep_linking(true)
                .filter(true),
        )
    });
    match utoipa_swagger_ui::serve(file, config.clone()) {
        Ok(Some(found)) => {
            let mut bytes = found.bytes.into_owned();
            if file == "index.html" {
                // The page's links are relative ("./swagger-ui.css"); served at `/docs`, they
                // must resolve under `/docs/`.
                let page = String::from_utf8_lossy(&bytes)
                    .replacen("<head>", "<head>\n<base href=\"/docs/\">", 1)
                    .replacen("<title>Swagger UI</title>", "<title>Colloquy API reference</title>", 1);
                bytes = page.into_bytes();
            }
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Ok(None) => ApiError::not_found(format!("file {file}")).into_response(),
        Err(error) => ApiError::internal(&error).into_response(),
    }
}

/// Adds what every operation shares; see the module's documentation.
#[derive(Debug)]
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scopes = SCOPES.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!(
                        "An API token of one tenant (`colloquy tokens create`, or `POST /v1/tokens`). \
                         Scopes: {scopes}; `admin` allows everything. Each operation lists the \
                         scope it needs; a token without it gets 403."
                    )))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in operations_mut(item) {
                conventions(path, method, operation);
            }
        }
    }
}

/// The operations of a path item with their method names.
pub fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
        ("head", &mut item.head),
        ("options", &mut item.options),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|operation| (method, operation)))
    .collect()
}

/// The scope an operation of `tag` needs, by convention: the tag's resource, `read` for a GET
/// and `write` otherwise; tokens are the admin's. `None` for the public tags (`operations`,
/// `status`). An operation that needs another scope names it in its `security`.
fn conventional_scope(tag: &str, method: &str) -> Option<String> {
    let resource = match tag {
        "contacts" => "contacts",
        "conversations" | "inbox" | "messages" | "timers" => "conversations",
        "groups" => "groups",
        "events" => "events",
        "calendars" | "sla" => "settings",
        "reports" => "reports",
        "audit" => "audit",
        "webhooks" => "webhooks",
        "tokens" => return Some(crate::extract::ADMIN_SCOPE.to_owned()),
        _ => return None,
    };
    Some(format!("{resource}:{}", if method == "get" { "read" } else { "write" }))
}

/// Whether an operation takes `If-Match` and so can answer 412, by convention: every change to an
/// existing resource (a method other than GET on a path with `{id}`), except the operations that
/// [`WITHOUT_IF_MATCH`] lists.
fn takes_if_match(path: &str, method: &str) -> bool {
    method != "get" && path.contains("{id}") && !WITHOUT_IF_MATCH.contains(&(method, path))
}

/// Changes to an existing resource that take no `If-Match`: a provider's report of activity and a
/// sync request record what happened whatever the client read, and a token's revocation and a
/// contact's erasure are final whatever the client read; a webhook's secret, deliveries and
/// test ping are not its versioned definition.
const WITHOUT_IF_MATCH: [(&str, &str); 8] = [
    ("post", "/v1/groups/{id}/provider/activity"),
    ("post", "/v1/groups/{id}/sync"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/contacts/{id}/erase"),
    ("post", "/v1/webhooks/{id}/rotate-secret"),
    ("post", "/v1/webhooks/{id}/replay"),
    ("post", "/v1/webhooks/{id}/resume"),
    ("post", "/v1/webhooks/{id}/ping"),
];

fn conventions(path: &str, method: &str, operation: &mut Operation) {
    if operation.security.is_none() {
        let tag = operation.tags.iter().flatten().next().map(String::as_str).unwrap_or_default();
        if let Some(scope) = conventional_scope(tag, method) {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, [scope])]);
        }
    }
    let scopes = scopes_of(operation);
    let has_body = operation.request_body.is_some();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let answers_412 = operation.responses.responses.contains_key("412") || takes_if_match(path, method);
    let command = method != "get" && !scopes.is_empty();

    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if answers_412 {
        parameters.push(header_parameter(
            "If-Match",
            "The `ETag` of the version this change is based on; when the resource has moved on, \
             the answer is 412 and nothing is changed.",
            "\"3\"",
            // `*`, or an ETag; as two alternatives, since Schemathesis (4.32) finds no value for
            // the one pattern `^(\*|(W/)?"[0-9]{1,18}")$` and sends a schema-invalid one as valid.
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["*"])))
                .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(r#"^(W/)?"[0-9]{1,18}"$"#)))
                .into(),
        ));
    }
    if method == "post" && !scopes.is_empty() {
        parameters.push(header_parameter(
            "Idempotency-Key",
            "Makes the POST safe to retry: a retry with the same key and request gets the first \
             answer again (header `Idempotent-Replayed: true`) and changes nothing; the same key \
             with a different request is a 422, and while the first is still running a 409. \
             1 to 255 visible ASCII characters, the token's own, kept 24 hours.",
            "",
            string_matching("^[!-~]{1,255}$"),
        ));
    }
    if command {
        parameters.push(header_parameter(
            "X-Correlation-Id",
            "A UUID recorded in the metadata of the events this request appends.",
            EXAMPLE_ID,
            // The format as well as the pattern: with the pattern alone Schemathesis (4.32) finds
            // no value for it and sends a schema-invalid one as valid.
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .pattern(Some(UUID_PATTERN))
                .into(),
        ));
        parameters.push(header_parameter(
            "Colloquy-On-Behalf-Of",
            "The agent (a user id of yours) this token acts for: the events record the agent as \
             their actor (kind `user`) and the token as `via_token`, so auditors see both.",
            "agent-42",
            string_matching("^[!-~]{1,128}$"),
        ));
    }
    if parameters.is_empty() {
        operation.parameters = None;
    }

    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: RefOr<utoipa::openapi::Response>| {
        responses.entry(status.to_owned()).or_insert(response);
    };
    if has_body || has_parameters || command {
        add("400", reference::<BadRequest>());
    }
    if path.contains("{id}") || path.contains("{correlation_id}") {
        add("404", reference::<NotFound>());
    }
    if answers_412 {
        add("412", reference::<PreconditionFailed>());
    }
    if has_body {
        add("413", reference::<PayloadTooLarge>());
        add("415", reference::<UnsupportedMediaType>());
    }
    if !scopes.is_empty() {
        add("401", reference::<Unauthorized>());
        add("403", forbidden(&scopes).into());
        add("503", reference::<Unavailable>());
    }
    if method == "post" && !scopes.is_empty() {
        add("409", reference::<Conflict>());
        add("422", reference::<Unprocessable>());
    }
    add("500", reference::<Internal>());
}

/// The scopes an operation's security requirements name.
fn scopes_of(operation: &Operation) -> Vec<String> {
    let requirements = operation.security.iter().flatten();
    requirements
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| value.get(BEARER).cloned())
        .filter_map(|scopes| serde_json::from_value::<Vec<String>>(scopes).ok())
        .flatten()
        .collect()
}

/// A header every such operation takes, with the `pattern` the server holds its value to (a
/// value outside it is a 400), so a generated client sends only what is accepted.
/// A string schema with `pattern`.
fn string_matching(pattern: &str) -> Schema {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).into()
}

fn header_parameter(
    name: &str,
    description: &str,
    example: &str,
    schema: Schema,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        // No example where one value would be sent by every generated request (a key).
        .example((!example.is_empty()).then(|| serde_json::Value::String(example.to_owned())))
        .build()
}

fn reference<R: for<'r> ToResponse<'r>>() -> RefOr<utoipa::openapi::Response> {
    RefOr::Ref(Ref::from_response_name(R::response().0))
}

fn forbidden(scopes: &[String]) -> utoipa::openapi::Response {
    let names = scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" or ");
    let example = scopes.first().map_or_else(|| "admin".to_owned(), Clone::clone);
    problem_response(
        &format!("The token lacks the scope {names} (or `admin`)."),
        &[("forbidden", ApiError::forbidden(&example))],
    )
}

/// A problem+json answer with named examples.
fn problem_response(description: &str, examples: &[(&str, ApiError)]) -> utoipa::openapi::Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .examples_from_iter(examples.iter().map(|(name, error)| {
            (*name, ExampleBuilder::new().summary(error.detail()).value(Some(error.body())).build())
        }))
        .build();
    ResponseBuilder::new().description(description).content(PROBLEM_JSON, content).build()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident, $description:literal, [$(($example:literal, $error:expr)),+ $(,)?];)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                (stringify!($name), problem_response($description, &[$(($example, $error)),+]).into())
            }
        }
    )*};
}

problem_responses! {
    /// 400.
    BadRequest,
    "The request cannot be understood as sent: the body is not JSON or does not fit (wrong \
     types, unknown fields), an id is not a UUID, or a parameter or header is invalid.",
    [
        ("invalid-field", ApiError::invalid_field("limit", "must be at most 100")),
        ("malformed-json", ApiError::bad_request("the body is not valid JSON: expected value at line 1 column 1")),
    ];
    /// 401.
    Unauthorized,
    "No token, or one that is unknown, expired or revoked.",
    [("unauthorized", ApiError::unauthorized("the token is unknown, expired or revoked"))];
    /// 404.
    NotFound,
    "Nothing here for this tenant (another tenant's resources are not found either).",
    [("not-found", ApiError::not_found(format!("conversation {EXAMPLE_ID}")))];
    /// 410.
    Gone,
    "The resource was deleted; its events stay readable.",
    [("gone", ApiError::gone(format!("conversation {EXAMPLE_ID} is deleted; its events stay readable")))];
    /// 409.
    Conflict,
    "A conflict with the current state (e.g. the id is taken), concurrent writes that kept \
     conflicting, or a request with the same Idempotency-Key still running.",
    [
        ("exists", ApiError::conflict(format!("contact {EXAMPLE_ID} already exists"))),
        ("concurrent", ApiError::conflict("the resource kept changing under concurrent writes; retry the request")),
    ];
    /// 412.
    PreconditionFailed,
    "`If-Match` names a version that is not the current one; nothing was changed.",
    [("stale", ApiError::precondition_failed(
        "If-Match names version 3, but the current version is 4; fetch it again and retry",
    ))];
    /// 413.
    PayloadTooLarge,
    "The body is larger than 1 MiB.",
    [("too-large", ApiError::payload_too_large(format!("the body is larger than {} bytes", crate::BODY_LIMIT)))];
    /// 415.
    UnsupportedMediaType,
    "The body is not sent as JSON.",
    [("not-json", ApiError::unsupported_media_type(
        "send the body as JSON with Content-Type: application/json",
    ))];
    /// 422.
    Unprocessable,
    "The command was refused: it breaks a rule of the resource (`command-refused`) or a field \
     is invalid (`validation-failed`, naming the field), or the Idempotency-Key was used before \
     with a different request.",
    [
        ("refused", ApiError::refused("the conversation is closed; reopen it first")),
        ("invalid", ApiError::invalid(FieldError::new("email", "is not an e-mail address"))),
    ];
    /// 503.
    Unavailable,
    "A dependency (the event store, or a read model still catching up) is unavailable, or the \
     server is handling as many requests as it takes at once; retry after `Retry-After` seconds.",
    [
        ("unavailable", ApiError::unavailable("the event store is unavailable; try again shortly")),
        ("overloaded", ApiError::overloaded(1024)),
    ];
    /// 429.
    TooManyStreams,
    "The token already has as many event streams open as it may; close one (or retry after \
     `Retry-After` seconds).",
    [("too-many-streams", ApiError::too_many_streams(crate::state::MAX_STREAMS_PER_TOKEN))];
    /// 500.
    Internal,
    "Something went wrong on the server; it has been logged. No details are sent.",
    [("internal", ApiError::internal_answer())];
}

/// The contact's details on a conversation served by the inbox read model (the schema of
/// `colloquy_projections::conversation_list::ContactSummary`, which does not depend on utoipa;
/// a test keeps the two in step).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ContactSummary)]
pub struct ContactSummarySchema {
    /// Display name.
    pub name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// E.164 phone.
    pub phone: Option<String>,
}

/// Conversation counts (the schema of `colloquy_projections::conversation_list::Counts`; a test
/// keeps the two in step).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Counts)]
pub struct CountsSchema {
    /// Live conversations per status (every status listed, zeros included).
    #[schema(example = json!({"open": 12, "pending": 3, "snoozed": 1, "bot": 0, "closed": 240}))]
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// The statuses `all`, `mine` and `unassigned` count.
    pub statuses: Vec<String>,
    /// Conversations in those statuses.
    pub all: i64,
    /// Of those, assigned to the user asked about (absent when none was).
    pub mine: Option<i64>,
    /// Of those, assigned to no user.
    pub unassigned: i64,
}

/// A token as listed, never with its secret (the schema of `colloquy_infra::tokens::TokenInfo`;
/// a test keeps the two in step).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenInfo)]
pub struct TokenInfoSchema {
    /// Id.
    pub id: uuid::Uuid,
    /// Tenant.
    pub tenant_id: String,
    /// Name (the actor recorded in events).
    pub name: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Expires at, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked at, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// The property names of a schema in the document.
    fn properties(name: &str) -> BTreeSet<String> {
        let document = serde_json::to_value(document()).unwrap();
        let schema = &document["components"]["schemas"][name]["properties"];
        schema.as_object().unwrap_or_else(|| panic!("no schema {name}")).keys().cloned().collect()
    }

    fn keys(value: impl Serialize) -> BTreeSet<String> {
        match serde_json::to_value(value).unwrap() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn schemas_of_other_crates_types_match_what_they_serialize() {
        use colloquy_projections::conversation_list::{ContactSummary, Counts};
        let counts = Counts { mine: Some(1), ..Counts::default() };
        assert_eq!(properties("Counts"), keys(counts));
        assert_eq!(properties("ContactSummary"), keys(ContactSummary::default()));
        let token = colloquy_infra::tokens::TokenInfo {
            id: uuid::Uuid::nil(),
            tenant_id: "default".into(),
            name: "ci".into(),
            scopes: vec!["admin".into()],
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
        };
        assert_eq!(properties("TokenInfo"), keys(token));
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let document = serde_json::to_value(document()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(document["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
    }
}
