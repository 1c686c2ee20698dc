//! The web page: `/` and its assets under `/assets/`, embedded in the binary (`web/`), so
//! nothing is built or read from disk at run time.
//!
//! Caching: each asset is also served under a name holding a hash of its content
//! (`/assets/app.3f9c0a1b2d.js`), which the page links to, so those answers can be cached for a
//! year (`immutable`) and a new build is picked up at once. The page itself and the plain
//! names carry an `ETag` and `no-cache`: a browser asks each time and gets a 304 while nothing
//! changed.
//!
//! Security: the page runs under a Content-Security-Policy that allows nothing but its own
//! origin and no inline script or style, so an injected string can neither run nor phone home.
//! It calls only this service's API, with the key from the browser's storage.

use std::collections::HashMap;

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, EntityTag, IfNoneMatch,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError as _, guard, web};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// What the page may load and call: its own origin only. `blob:` is the PNG download (an
/// object URL of the image the page fetched), not another origin.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Content-hashed names never change meaning, so a year and `immutable` (no revalidation on
/// reload).
const HASHED_CACHE: &str = "public, max-age=31536000, immutable";
/// The page and the plain asset names: revalidate each time (a 304 when unchanged).
const REVALIDATE: &str = "no-cache";

/// The page's files as built into the binary: the name `index.html` refers to each by, its
/// content type and its bytes.
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../web/favicon.svg"),
    ),
];
const INDEX: &str = include_str!("../web/index.html");
/// Replaced in `index.html` by whether anonymous creation is on, which decides whether the
/// shorten form asks for a key.
const ANONYMOUS_CREATE_SLOT: &str = "{{anonymous_create}}";

#[derive(Debug)]
struct Asset {
    content_type: &'static str,
    body: web::Bytes,
    etag: EntityTag,
    cache_control: &'static str,
}

impl Asset {
    fn new(content_type: &'static str, body: web::Bytes, cache_control: &'static str) -> Self {
        let digest = Sha256::digest(&body);
        Self::digested(content_type, body, &digest, cache_control)
    }

    /// [`Self::new`] with the body's SHA-256 already at hand.
    fn digested(
        content_type: &'static str,
        body: web::Bytes,
        digest: &[u8],
        cache_control: &'static str,
    ) -> Self {
        Self {
            content_type,
            etag: EntityTag::new_strong(hex(&digest[..12])),
            body,
            cache_control,
        }
    }
}

/// The page and its assets, ready to serve.
#[derive(Debug)]
pub struct Page {
    index: Asset,
    /// By file name under `/assets/`: each file under its plain and its hashed name.
    assets: HashMap<String, Asset>,
}

impl Page {
    pub fn new(anonymous_create: bool) -> Self {
        let mut assets = HashMap::new();
        let mut index = INDEX.replace(ANONYMOUS_CREATE_SLOT, &anonymous_create.to_string());
        for (name, content_type, bytes) in FILES {
            let body = web::Bytes::from_static(bytes);
            let digest = Sha256::digest(&body);
            let hashed = hashed_name(name, &digest);
            index = index.replace(&format!("/assets/{name}\""), &format!("/assets/{hashed}\""));
            let served = |cache| Asset::digested(content_type, body.clone(), &digest, cache);
            assets.insert(hashed, served(HASHED_CACHE));
            assets.insert(name.to_owned(), served(REVALIDATE));
        }
        Self {
            index: Asset::new("text/html; charset=utf-8", index.into(), REVALIDATE),
            assets,
        }
    }
}

/// `app.js` with content digest `d` is `app.<first 10 hex digits of d>.js`.
fn hashed_name(name: &str, digest: &[u8]) -> String {
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name, ""));
    format!("{stem}.{}.{extension}", &hex(&digest[..5]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET` and `HEAD` of `/` and `/assets/{name}`. Outside the OpenAPI document: the page is
/// not part of the API, and its answers are HTML, not the API's JSON.
pub fn configure(config: &mut web::ServiceConfig) {
    let read = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    config
        .route("/", read().to(index))
        .route("/assets/{name}", read().to(asset));
}

async fn index(request: HttpRequest, page: web::Data<Page>) -> HttpResponse {
    let mut response = respond(&request, &page.index);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        actix_web::http::header::HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    response
}

async fn asset(
    request: HttpRequest,
    name: web::Path<String>,
    page: web::Data<Page>,
) -> HttpResponse {
    match page.assets.get(name.as_str()) {
        Some(asset) => respond(&request, asset),
        None => ApiError::NoRoute.error_response(),
    }
}

/// `asset`, or 304 when the request's `If-None-Match` names its tag.
fn respond(request: &HttpRequest, asset: &Asset) -> HttpResponse {
    let current = match request.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&asset.etag)),
        None => false,
    };
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((ETAG, asset.etag.to_string()))
        .insert_header((CACHE_CONTROL, asset.cache_control))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((X_FRAME_OPTIONS, "DENY"))
        // The page's address says nothing a target should learn.
        .insert_header((REFERRER_POLICY, "no-referrer"));
    if current {
        return response.finish();
    }
    response
        .insert_header((CONTENT_TYPE, asset.content_type))
        .body(asset.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_by_its_hashed_name() {
        let page = Page::new(false);
        let html = std::str::from_utf8(&page.index.body).expect("UTF-8");
        for (name, _, bytes) in FILES {
            let hashed = format!("/assets/{}", hashed_name(name, &Sha256::digest(bytes)));
            assert!(
                html.contains(&format!("\"{hashed}\"")),
                "{name} as {hashed}"
            );
            assert!(
                !html.contains(&format!("\"/assets/{name}\"")),
                "{name} unhashed"
            );
        }
    }

    #[test]
    fn the_page_says_whether_anonymous_creation_is_on() {
        for on in [false, true] {
            let page = Page::new(on);
            let html = std::str::from_utf8(&page.index.body).expect("UTF-8");
            assert!(!html.contains(ANONYMOUS_CREATE_SLOT));
            assert!(html.contains(&format!(
                r#"<meta name="kurz-anonymous-create" content="{on}">"#
            )));
        }
    }

    /// The codes of the README's error table, the list clients are promised.
    fn documented_error_codes() -> Vec<String> {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("## Validation rules and error codes")
            .nth(1)
            .expect("the README's error section");
        let table = table.split("\n#").next().unwrap_or(table);
        table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`'))
            .map(|(code, _)| code.to_owned())
            .collect()
    }

    #[test]
    fn the_page_has_a_message_for_every_error_code_of_the_api() {
        let script = std::str::from_utf8(FILES[0].2).expect("UTF-8");
        let codes = documented_error_codes();
        assert!(codes.len() > 40, "the table was found: {codes:?}");
        let missing: Vec<_> = codes
            .iter()
            .filter(|code| {
                !script.contains(&format!("'{code}'")) && !script.contains(&format!("\"{code}\""))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "codes without a message in app.js: {missing:?}"
        );
    }

    #[test]
    fn a_hashed_name_changes_with_the_content() {
        let a = hashed_name("app.js", &Sha256::digest(b"one"));
        let b = hashed_name("app.js", &Sha256::digest(b"two"));
        assert_ne!(a, b);
        assert!(a.starts_with("app.") && a.ends_with(".js") && a.len() == "app..js".len() + 10);
    }
}
