//! The OpenAPI 3.1 document of the create API, generated from the code, and what it drives at
//! run time: `GET /api/v1/openapi.json`, the Swagger UI at `/docs`, and the 404 or 405 for a
//! request that no route takes.
//!
//! # Adding a route
//!
//! 1. Put `#[utoipa::path(...)]` above the handler's actix route macro (`#[post("/v1/...")]`;
//!    utoipa reads the path and method from it, so the two cannot disagree). Give it a `tag`,
//!    a `summary`, its scope as `security(("bearer" = ["links:write"]))` (none for a public
//!    route), its `request_body` and parameters, and the responses that are its own: the
//!    success, and the errors only it returns, each one of [`errors`]
//!    (`(status = 409, response = inline(errors::AliasTaken))`).
//! 2. Register it in [`crate::startup::routes`] with `.service(handler)`: inside the `/api`
//!    scope when it needs a key. That one call serves it and puts it in the document
//!    (utoipa-actix-web); a route added any other way is neither documented nor, for this
//!    module, known (it would answer 404 to other methods instead of 405).
//!
//! What every operation of a kind can answer is added by [`conventions`], so no annotation
//! repeats it: behind the guard (an operation with a key requirement) 401, 403, 429 and 503,
//! the `X-Api-Key` alternative to the bearer scheme, the scope in the description and the
//! rate-limit headers on every response; with a JSON body 400, 413, 415 and 422; with query
//! parameters 400; with path parameters 404. An error response's schema lists its possible
//! `code` values as an enum, so schemathesis holds the service to them.

use std::collections::BTreeSet;

use actix_web::dev::ResourceDef;
use actix_web::http::header::{ALLOW, CONTENT_TYPE, HeaderValue, LOCATION};
use actix_web::{App, HttpRequest, HttpResponse, ResponseError as _, get, web};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ApiError;

/// Where the document is served. It is outside the guard (registered before the `/api`
/// scope), so it needs no key and is not rate limited: it is a constant answered from
/// memory, as cheap as `/healthz`, and tools (schemathesis, code generators, the UI) fetch it
/// often. Nothing in it is secret: it describes the API, not its data.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kurz create API",
        description = include_str!("openapi.md"),
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "links", description = "Short links: create, show, edit, list, delete, disable."),
        (name = "stats", description = "Click analytics: a link's or an account's clicks over a range."),
        (name = "accounts", description = "Accounts (admin)."),
        (name = "keys", description = "API keys (admin)."),
        (name = "operations", description = "Probes, metrics and this document: no key needed."),
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The two ways to send a key. Both are the same key; `X-Api-Key` is for clients that cannot
/// set `Authorization`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("kurz_ + 43 base62 characters + 6-character checksum")
            .description(Some(
                "An API key as `Authorization: Bearer kurz_…`. Made by an admin \
                 (`POST /api/v1/accounts/{id}/keys`) or `kurz-keypool api-keys create`.",
            ))
            .build();
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The same API key in `X-Api-Key`, for clients that cannot set `Authorization`. \
                 Sending both with different keys is 401 `unauthorized`.",
            ))),
        );
    }
}

const BEARER: &str = "bearer";
/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
const API_KEY: &str = "api_key";

/// Every error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, ToSchema)]
pub struct ErrorDetail {
    /// Stable; each response lists the codes it can carry.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

/// A scope, as keys carry them.
#[derive(Debug, Serialize, ToSchema)]
pub enum ScopeName {
    #[serde(rename = "links:read")]
    LinksRead,
    #[serde(rename = "links:write")]
    LinksWrite,
    #[serde(rename = "stats:read")]
    StatsRead,
    #[serde(rename = "admin")]
    Admin,
}

/// `GET /healthz`.
#[derive(Debug, ToSchema)]
pub struct Liveness {
    #[schema(example = "alive")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (200) or `unavailable` (503).
    #[schema(example = "ready")]
    pub status: String,
    /// `up` or `down`.
    pub postgres: String,
    /// `up` or `down`.
    pub redis: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
}

/// `GET /api/v1/accounts`.
#[derive(Debug, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<crate::admin::AccountView>,
}

/// `GET /api/v1/keys`.
#[derive(Debug, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::admin::KeyView>,
}

/// One error code: its status and when it is answered. The document's error responses are
/// built from this table; a unit test holds it to [`ApiError`].
#[derive(Debug)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    pub when: &'static str,
}

/// Every code the create API answers (the workspace README has the long form).
pub const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode {
        code: "invalid_json",
        status: 400,
        when: "the body is not valid JSON",
    },
    ErrorCode {
        code: "invalid_query",
        status: 400,
        when: "the query string has an unknown parameter or a value of the wrong type",
    },
    ErrorCode {
        code: "invalid_cursor",
        status: 400,
        when: "`cursor` is not a `next_cursor` this API handed out",
    },
    ErrorCode {
        code: "invalid_range",
        status: 400,
        when: "a stats range whose `from` is not before its `to`",
    },
    ErrorCode {
        code: "too_many_buckets",
        status: 400,
        when: "a stats series would have more than 1,000 buckets: choose a coarser `granularity` or a shorter range",
    },
    ErrorCode {
        code: "invalid_timezone",
        status: 400,
        when: "`tz` is not an IANA time zone name (such as `Europe/Berlin` or `UTC`)",
    },
    ErrorCode {
        code: "invalid_idempotency_key",
        status: 400,
        when: "`Idempotency-Key` is empty, longer than 255 characters, or not visible ASCII",
    },
    ErrorCode {
        code: "unauthorized",
        status: 401,
        when: "no credentials, or unusable ones (another scheme, an empty token, two different keys)",
    },
    ErrorCode {
        code: "invalid_api_key",
        status: 401,
        when: "the key is unknown, revoked, expired or mistyped",
    },
    ErrorCode {
        code: "insufficient_scope",
        status: 403,
        when: "the key lacks the scope this operation needs",
    },
    ErrorCode {
        code: "account_disabled",
        status: 403,
        when: "the key's account is disabled",
    },
    ErrorCode {
        code: "not_found",
        status: 404,
        when: "nothing with this code or id that this key may see (unknown, deleted, another account's, or an id that is not a number)",
    },
    ErrorCode {
        code: "method_not_allowed",
        status: 405,
        when: "the path exists, with other methods (see `Allow`)",
    },
    ErrorCode {
        code: "alias_taken",
        status: 409,
        when: "the alias was already issued (to a link, deleted or not, or as a pool key)",
    },
    ErrorCode {
        code: "account_name_taken",
        status: 409,
        when: "an account with this name exists",
    },
    ErrorCode {
        code: "payload_too_large",
        status: 413,
        when: "the body is larger than `KURZ_MAX_URL_LENGTH` + 4,096 bytes",
    },
    ErrorCode {
        code: "unsupported_media_type",
        status: 415,
        when: "`Content-Type` is not `application/json`",
    },
    ErrorCode {
        code: "invalid_body",
        status: 422,
        when: "JSON, but a required field is missing, a field has the wrong type, or a field is unknown",
    },
    ErrorCode {
        code: "url_too_long",
        status: 422,
        when: "`url` is longer than `KURZ_MAX_URL_LENGTH` bytes (8,192), before or after normalization",
    },
    ErrorCode {
        code: "url_invalid_characters",
        status: 422,
        when: "`url` has control, non-space whitespace or invisible formatting characters",
    },
    ErrorCode {
        code: "invalid_url",
        status: 422,
        when: "`url` is not an absolute URL",
    },
    ErrorCode {
        code: "url_missing_host",
        status: 422,
        when: "`url` has no host",
    },
    ErrorCode {
        code: "unsupported_scheme",
        status: 422,
        when: "`url` is not `http` or `https`",
    },
    ErrorCode {
        code: "url_has_credentials",
        status: 422,
        when: "`url` has a user name or password",
    },
    ErrorCode {
        code: "url_self_reference",
        status: 422,
        when: "`url` points at the short links' own host",
    },
    ErrorCode {
        code: "url_private_target",
        status: 422,
        when: "`url`'s host is localhost or a private, loopback, link-local or otherwise non-public address",
    },
    ErrorCode {
        code: "url_blocked",
        status: 422,
        when: "`url`'s host is on the blocklist (by default, other link shorteners)",
    },
    ErrorCode {
        code: "invalid_alias",
        status: 422,
        when: "`alias` is not 3 to 64 characters of `A-Z a-z 0-9 _ -`",
    },
    ErrorCode {
        code: "alias_reserved",
        status: 422,
        when: "`alias` is a reserved word (`api`, `docs`, `healthz`, ...)",
    },
    ErrorCode {
        code: "invalid_expires_at",
        status: 422,
        when: "`expires_at` is not an RFC 3339 date-time with an offset",
    },
    ErrorCode {
        code: "expires_at_in_past",
        status: 422,
        when: "`expires_at` is not in the future",
    },
    ErrorCode {
        code: "search_too_broad",
        status: 422,
        when: "a `q=` search, a count or an account's stats read the account's rows for more than 2 s",
    },
    ErrorCode {
        code: "invalid_redirect_status",
        status: 422,
        when: "`redirect_status` is not 301, 302, 307 or 308",
    },
    ErrorCode {
        code: "invalid_max_visits",
        status: 422,
        when: "`max_visits` is not a whole number from 1 to 1,000,000,000,000",
    },
    ErrorCode {
        code: "invalid_expired_url",
        status: 422,
        when: "`expired_url` breaks one of the `url` rules (the message says which)",
    },
    ErrorCode {
        code: "idempotency_key_reused",
        status: 422,
        when: "the `Idempotency-Key` was used with a different request",
    },
    ErrorCode {
        code: "no_items",
        status: 422,
        when: "a bulk call's `links` is empty",
    },
    ErrorCode {
        code: "too_many_items",
        status: 422,
        when: "a bulk call has more items than `KURZ_BULK_MAX_ITEMS`, or than the key's rate limit",
    },
    ErrorCode {
        code: "invalid_name",
        status: 422,
        when: "`name` is empty, blank, longer than 100 characters, or has control characters",
    },
    ErrorCode {
        code: "invalid_scopes",
        status: 422,
        when: "`scopes` is empty or names an unknown scope",
    },
    ErrorCode {
        code: "invalid_rate_limit",
        status: 422,
        when: "`rate_limit_per_minute` is not 1 to 1,000,000",
    },
    ErrorCode {
        code: "rate_limited",
        status: 429,
        when: "the key's or the IP's rate limit is spent, or the IP failed authentication too often; wait `Retry-After` seconds",
    },
    ErrorCode {
        code: "internal_error",
        status: 500,
        when: "a bug; the cause is logged, not shown",
    },
    ErrorCode {
        code: "unavailable",
        status: 503,
        when: "PostgreSQL is unreachable, too slow or restarting, or its circuit breaker is open; retry after `Retry-After` (1 s)",
    },
    ErrorCode {
        code: "key_pool_empty",
        status: 503,
        when: "no unused short code is left (the key-pool worker is behind); retry after `Retry-After` (5 s)",
    },
];

fn error_code(code: &str) -> &'static ErrorCode {
    ERROR_CODES
        .iter()
        .find(|c| c.code == code)
        .unwrap_or_else(|| panic!("`{code}` is not in ERROR_CODES"))
}

/// The error responses an annotation can name, each a set of codes of one status:
/// `(status = 404, response = inline(errors::NotFound))`. The status in the annotation must
/// be the codes' status (a unit test checks every response of the document).
pub mod errors {
    macro_rules! error_responses {
        ($($(#[doc = $doc:literal])* $name:ident = [$($code:literal),+ $(,)?];)*) => {$(
            $(#[doc = $doc])*
            #[derive(Debug)]
            pub struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (
                    &'r str,
                    utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
                ) {
                    let response = super::error_response(&[$($code),+]);
                    let response = serde_json::from_value(response)
                        .expect("an error response is a valid Response");
                    (stringify!($name), utoipa::openapi::RefOr::T(response))
                }
            }
        )*};
    }

    error_responses! {
        /// 404: no link, account or key of this code or id is visible to the key.
        NotFound = ["not_found"];
        /// 409 on creating a link with an alias.
        AliasTaken = ["alias_taken"];
        /// 409 on creating an account.
        AccountNameTaken = ["account_name_taken"];
        /// 400 for a bad `Idempotency-Key` header.
        BadIdempotencyKey = ["invalid_idempotency_key"];
        /// 422: the rules of a new link, in the order they are checked, and idempotency.
        InvalidLink = [
            "url_too_long", "url_invalid_characters", "invalid_url", "url_missing_host",
            "unsupported_scheme", "url_has_credentials", "url_self_reference",
            "url_private_target", "url_blocked", "invalid_expires_at", "expires_at_in_past",
            "invalid_alias", "alias_reserved", "invalid_redirect_status", "invalid_expired_url",
            "invalid_max_visits", "idempotency_key_reused",
        ];
        /// 422: the rules of an edit, the create's for the fields it may change.
        InvalidEdit = [
            "url_too_long", "url_invalid_characters", "invalid_url", "url_missing_host",
            "unsupported_scheme", "url_has_credentials", "url_self_reference",
            "url_private_target", "url_blocked", "invalid_expires_at", "expires_at_in_past",
            "invalid_redirect_status", "invalid_expired_url", "invalid_max_visits",
        ];
        /// 400 for a stats query's range, granularity or time zone.
        BadStatsQuery = ["invalid_range", "too_many_buckets", "invalid_timezone"];
        /// 400 for a listing's `cursor`.
        BadCursor = ["invalid_cursor"];
        /// 422 when a search or a count runs out of its time.
        SearchTooBroad = ["search_too_broad"];
        /// 422 for a bulk call as a whole (each item's own errors are in its result).
        InvalidBulk = ["no_items", "too_many_items", "idempotency_key_reused"];
        /// 422 on creating an account.
        InvalidAccount = ["invalid_name"];
        /// 422 on creating a key.
        InvalidKey = [
            "invalid_name", "invalid_scopes", "invalid_expires_at", "expires_at_in_past",
            "invalid_rate_limit",
        ];
        /// 503 when a create finds no short code left.
        KeyPoolEmpty = ["key_pool_empty"];
    }
}

/// An error response (as JSON) that can carry `codes`, all of one status.
fn error_response(codes: &[&str]) -> Value {
    let mut response = json!({
        "description": "",
        "headers": {
            "Cache-Control": {
                "description": "`no-store`: errors are never cached.",
                "schema": { "type": "string" },
            },
        },
        "content": { "application/json": { "schema": {
            "allOf": [
                { "$ref": "#/components/schemas/ErrorBody" },
                { "type": "object", "properties": { "error": {
                    "type": "object",
                    "properties": { "code": { "type": "string", "enum": [] } },
                } } },
            ],
        } } },
    });
    conventions::add_codes(&mut response, codes);
    response
}

/// The rules every operation of a kind follows (see the module docs), applied to the JSON
/// form of the document.
mod conventions {
    use super::*;

    pub fn apply(document: &mut Value) {
        let Some(paths) = document["paths"].as_object_mut() else {
            return;
        };
        for item in paths.values_mut() {
            for method in METHODS {
                if let Some(operation) = item.get_mut(method) {
                    operation_conventions(operation);
                }
            }
            if let Some(head) = item.get_mut("head") {
                head_conventions(head);
            }
        }
    }

    /// A `HEAD` route is its `GET` without the body; utoipa gives both one operation, so the
    /// `HEAD` copy gets an id of its own and loses the response bodies.
    fn head_conventions(head: &mut Value) {
        if let Some(Value::String(id)) = head.get_mut("operationId") {
            id.push_str("_head");
        }
        for response in head["responses"]
            .as_object_mut()
            .into_iter()
            .flat_map(|r| r.values_mut())
        {
            if let Some(response) = response.as_object_mut() {
                response.remove("content");
            }
        }
    }

    fn operation_conventions(operation: &mut Value) {
        let guarded = describe_security(operation);
        if guarded {
            ensure_error(operation, 401, &["unauthorized", "invalid_api_key"]);
            ensure_error(operation, 403, &["insufficient_scope", "account_disabled"]);
            ensure_error(operation, 429, &["rate_limited"]);
            ensure_error(operation, 503, &["unavailable"]);
        }
        if operation.get("requestBody").is_some() {
            ensure_error(operation, 400, &["invalid_json"]);
            ensure_error(operation, 413, &["payload_too_large"]);
            ensure_error(operation, 415, &["unsupported_media_type"]);
            ensure_error(operation, 422, &["invalid_body"]);
        }
        if has_parameters_in(operation, "query") {
            ensure_error(operation, 400, &["invalid_query"]);
        }
        if has_parameters_in(operation, "path") {
            ensure_error(operation, 404, &["not_found"]);
        }
        let Some(responses) = operation["responses"].as_object_mut() else {
            return;
        };
        for (status, response) in responses.iter_mut() {
            let retry = status == "429" || status == "503";
            if !guarded && !retry {
                continue;
            }
            let headers = &mut response["headers"];
            if guarded {
                rate_limit_headers(headers);
            }
            if retry {
                headers["Retry-After"] = json!({
                    "description": "Seconds to wait before retrying (whole seconds, at least 1).",
                    "required": true,
                    "schema": { "type": "integer", "minimum": 1 },
                });
            }
        }
    }

    /// For an operation that needs a key: offers `X-Api-Key` wherever the bearer scheme is
    /// asked for, with the same scope, and says the scope in the description. `true` if the
    /// operation needs a key.
    ///
    /// The scope is a role name of the bearer requirement (`{"bearer": ["links:write"]}`).
    /// OpenAPI 3.0 allowed names there only for oauth2 and openIdConnect; 3.1 allows "role
    /// names which are required for the execution" for every other scheme type, which is
    /// exactly what a Kurz scope is. An oauth2 scheme would be the wrong claim (there is no
    /// token endpoint), and Swagger UI shows no role names, hence the description too.
    fn describe_security(operation: &mut Value) -> bool {
        let Some(requirements) = operation.get_mut("security").and_then(Value::as_array_mut) else {
            return false;
        };
        let scopes: Vec<Value> = requirements
            .iter()
            .filter_map(|r| r.get(BEARER))
            .flat_map(|s| s.as_array().cloned().unwrap_or_default())
            .collect();
        let needs_key = requirements.iter().any(|r| r.get(BEARER).is_some());
        if !needs_key {
            return false;
        }
        if !requirements.iter().any(|r| r.get(API_KEY).is_some()) {
            requirements.push(json!({ API_KEY: scopes }));
        }
        let names: Vec<String> = scopes
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect();
        let line = match names.as_slice() {
            [] => "**Needs** any valid API key.".to_owned(),
            names => format!(
                "**Scope:** {} (an `admin` key holds every scope).",
                names.join(", ")
            ),
        };
        append_description(operation, &line);
        true
    }

    fn append_description(operation: &mut Value, line: &str) {
        let text = match operation["description"].as_str() {
            Some(existing) if !existing.is_empty() => format!("{existing}\n\n{line}"),
            _ => line.to_owned(),
        };
        operation["description"] = Value::String(text);
    }

    fn has_parameters_in(operation: &Value, place: &str) -> bool {
        operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
    }

    /// Adds `codes` to the operation's response for `status`, making that response first if
    /// the annotation did not declare one.
    fn ensure_error(operation: &mut Value, status: u16, codes: &[&str]) {
        let responses = &mut operation["responses"];
        let key = status.to_string();
        match responses.get_mut(&key) {
            Some(response) => add_codes(response, codes),
            None => responses[key] = error_response(codes),
        }
    }

    /// Adds `codes` to an error response's `code` enum and description.
    pub fn add_codes(response: &mut Value, codes: &[&str]) {
        let mut description = response["description"].as_str().unwrap_or("").to_owned();
        let schema = &mut response["content"]["application/json"]["schema"]["allOf"][1];
        let listed = &mut schema["properties"]["error"]["properties"]["code"]["enum"];
        let mut known: Vec<Value> = listed.as_array().cloned().unwrap_or_default();
        for code in codes {
            if known.iter().any(|c| c == code) {
                continue;
            }
            let entry = error_code(code);
            known.push(json!(code));
            if !description.is_empty() {
                description.push('\n');
            }
            description.push_str(&format!("- `{}`: {}", entry.code, entry.when));
        }
        *listed = Value::Array(known);
        response["description"] = Value::String(description);
    }

    /// The limit that applied, on every response behind the guard. Not marked required: a
    /// 503 answered because the key could not be checked at all has none.
    fn rate_limit_headers(headers: &mut Value) {
        let integer = json!({ "type": "integer", "minimum": 0 });
        let string = json!({ "type": "string" });
        let entries = [
            (
                "RateLimit-Policy",
                "The policy that applied (`api_key`, `anonymous` or `auth_failures`), its quota and window in seconds: `\"api_key\";q=600;w=60` (draft-ietf-httpapi-ratelimit-headers).",
                &string,
            ),
            (
                "RateLimit",
                "What is left of it and the seconds until it is whole again: `\"api_key\";r=599;t=1`.",
                &string,
            ),
            (
                "X-RateLimit-Limit",
                "The quota: requests per window.",
                &integer,
            ),
            ("X-RateLimit-Remaining", "Requests left now.", &integer),
            (
                "X-RateLimit-Reset",
                "Seconds from now until the quota is whole again (a delta, not a Unix time).",
                &integer,
            ),
        ];
        for (name, description, schema) in entries {
            headers[name] = json!({ "description": description, "schema": schema });
        }
    }
}

/// The document, made once at start from the routes it describes, and the route table for
/// answering 404 or 405.
#[derive(Debug)]
pub struct Document {
    json: web::Bytes,
    /// Each documented path and its methods, uppercase.
    routes: Vec<(ResourceDef, Vec<String>)>,
}

impl Document {
    /// Registers `routes` on a throwaway app to collect what they document, then applies
    /// [`conventions`].
    pub fn build(routes: impl FnOnce(&mut ServiceConfig)) -> Self {
        let (_, openapi) = App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .configure(routes)
            .split_for_parts();
        let mut document = serde_json::to_value(&openapi).expect("the document serializes");
        conventions::apply(&mut document);
        Self::from_value(&document)
    }

    fn from_value(document: &Value) -> Self {
        let mut routes = Vec::new();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                let methods = item
                    .as_object()
                    .into_iter()
                    .flat_map(|ops| ops.keys())
                    .filter(|m| METHODS.contains(&m.as_str()))
                    .map(|m| m.to_uppercase())
                    .collect();
                routes.push((ResourceDef::new(path.as_str()), methods));
            }
        }
        Self {
            json: serde_json::to_vec(document)
                .expect("the document serializes")
                .into(),
            routes,
        }
    }

    /// The document as JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("the document is JSON")
    }

    /// The documented methods of the path `path` matches, if it matches one.
    fn methods_at(&self, path: &str) -> Option<&[String]> {
        self.routes
            .iter()
            .find(|(def, _)| def.is_match(path))
            .map(|(_, methods)| methods.as_slice())
    }
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    tag = "operations",
    summary = "This document",
    description = "The OpenAPI 3.1 document of this API. No key needed and not rate limited: \
        it is a constant served from memory.",
    responses((status = 200, description = "The document.", body = Object)),
)]
#[get("/api/v1/openapi.json")]
pub async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .body(document.json.clone())
}

/// The answer to a request no route took: 405 with `Allow` when its path is documented
/// with other methods, 404 otherwise. Under `/api` this runs behind the guard, so a caller
/// without a key learns nothing about which paths exist.
pub async fn unrouted(request: HttpRequest, document: web::Data<Document>) -> HttpResponse {
    let Some(methods) = document.methods_at(request.path()) else {
        return ApiError::NoRoute.error_response();
    };
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
        response.headers_mut().insert(ALLOW, allow);
    }
    response
}

/// Swagger UI at `/docs/`, from the files vendored into the binary (nothing is fetched at
/// build or run time), reading [`DOCUMENT_PATH`]. `validator_url("none")`: otherwise the
/// browser sends the document to validator.swagger.io to draw a badge.
pub fn docs(config: &mut web::ServiceConfig) {
    let ui =
        SwaggerUi::new("/docs/{_:.*}").config(Config::new([DOCUMENT_PATH]).validator_url("none"));
    config.service(ui).route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((LOCATION, "/docs/"))
                .finish()
        }),
    );
}

/// The codes of the document's error responses, by status (for tests).
pub fn codes_by_status(document: &Value) -> Vec<(String, u16, BTreeSet<String>)> {
    let mut out = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"];
                let codes =
                    &schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"];
                let Some(codes) = codes.as_array() else {
                    continue;
                };
                out.push((
                    format!("{} {path}", method.to_uppercase()),
                    status.parse().unwrap_or(0),
                    codes
                        .iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurz_repository::{RepoError, Scope};

    use crate::validate::ValidationError;

    fn document() -> Value {
        Document::build(crate::startup::routes).value()
    }

    /// One of each variant: the table must know its code, at its status.
    fn every_error() -> Vec<ApiError> {
        let down = || RepoError::Unavailable("down".into());
        let mut all = vec![
            ApiError::InvalidJson(String::new()),
            ApiError::InvalidBody(String::new()),
            ApiError::PayloadTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::InvalidIdempotencyKey,
            ApiError::IdempotencyKeyReused,
            ApiError::TooManyItems(1),
            ApiError::NoItems,
            ApiError::Unauthorized,
            ApiError::InvalidApiKey,
            ApiError::InsufficientScope(Scope::Admin),
            ApiError::AccountDisabled,
            ApiError::RateLimited(1),
            ApiError::NotFound,
            ApiError::NoSuchAccount,
            ApiError::NoSuchKey,
            ApiError::AccountNameTaken,
            ApiError::InvalidName,
            ApiError::InvalidScopes,
            ApiError::InvalidQuery(String::new()),
            ApiError::InvalidCursor,
            ApiError::InvalidRange(String::new()),
            ApiError::TooManyBuckets("hour"),
            ApiError::InvalidTimezone,
            ApiError::InvalidRateLimit,
            ApiError::NoRoute,
            ApiError::MethodNotAllowed,
            ApiError::AliasTaken,
            ApiError::KeyPoolEmpty,
            ApiError::SearchTooBroad,
            ApiError::Unavailable(down()),
            ApiError::Internal(down()),
        ];
        let s = String::new;
        all.extend(
            [
                ValidationError::InvalidUrl(s()),
                ValidationError::UrlTooLong(1),
                ValidationError::UnsupportedScheme(s()),
                ValidationError::UrlInvalidCharacters,
                ValidationError::UrlHasCredentials,
                ValidationError::UrlMissingHost,
                ValidationError::UrlSelfReference(s()),
                ValidationError::UrlPrivateTarget(s()),
                ValidationError::UrlBlocked(s()),
                ValidationError::InvalidAlias,
                ValidationError::AliasReserved(s()),
                ValidationError::InvalidExpiresAt,
                ValidationError::ExpiresAtInPast,
                ValidationError::InvalidRedirectStatus,
                ValidationError::InvalidMaxVisits,
                ValidationError::InvalidExpiredUrl(Box::new(ValidationError::InvalidAlias)),
            ]
            .map(ApiError::Validation),
        );
        all
    }

    #[test]
    fn the_code_table_matches_every_api_error() {
        for error in every_error() {
            let entry = error_code(error.code());
            assert_eq!(
                entry.status,
                error.status_code().as_u16(),
                "{}",
                error.code()
            );
        }
        for entry in ERROR_CODES {
            assert!(
                every_error().iter().any(|e| e.code() == entry.code),
                "`{}` is in the table but no ApiError answers it",
                entry.code
            );
        }
    }

    #[test]
    fn every_error_response_lists_codes_of_its_own_status() {
        let document = document();
        let responses = codes_by_status(&document);
        assert!(responses.len() > 20, "{responses:?}");
        for (operation, status, codes) in responses {
            assert!(!codes.is_empty(), "{operation} {status}");
            for code in codes {
                assert_eq!(error_code(&code).status, status, "{operation}: `{code}`");
            }
        }
    }

    #[test]
    fn every_operation_has_a_tag_a_summary_and_an_operation_id() {
        let document = document();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let name = format!("{method} {path}");
                assert!(operation["tags"][0].is_string(), "{name}: no tag");
                assert!(operation["summary"].is_string(), "{name}: no summary");
                assert!(
                    operation["operationId"].is_string(),
                    "{name}: no operationId"
                );
            }
        }
    }

    #[test]
    fn operations_under_api_need_a_key_except_the_document() {
        let document = document();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let keyed = operation["security"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r.get(BEARER).is_some()));
                let should = path.starts_with("/api/") && path != DOCUMENT_PATH;
                assert_eq!(keyed, should, "{method} {path}");
                if keyed {
                    let codes = &operation["responses"]["401"];
                    assert!(codes.is_object(), "{method} {path}: no 401");
                }
            }
        }
    }
}
