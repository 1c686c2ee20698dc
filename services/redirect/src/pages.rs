//! The small answers that are not redirects (404, 410, 414, 429): a minimal HTML page for
//! browsers, a line of plain text for everything else.
//!
//! A client gets HTML when its `Accept` names `text/html` (every browser's navigation does),
//! and text otherwise (curl, scripts, `*/*`). The pages are built once, from static text that
//! is HTML-escaped as they are built, and never echo anything from the request: the code or
//! path would add nothing a reader needs and is the classic way to a reflected XSS. They load
//! nothing (no styles, scripts, fonts or images; `Content-Security-Policy: default-src 'none'`
//! says so to the browser), so an error page costs no further request and leaks no visit to a
//! third party. Every page is `no-store`: an unknown code may come to exist, an expired link may
//! be edited back to life, and a throttled client must ask again.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, VARY,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

/// Which small answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 404: no link has this code (unknown, deleted, malformed, or any other path).
    NotFound,
    /// 410: the link expired, by date or by visits, and has no `expired_url`.
    Expired,
    /// 410: an admin disabled the link.
    Disabled,
    /// 414: the request's query, forwarded to the target, would make too long a `Location`.
    QueryTooLong,
    /// 429: the client looked up too many unknown codes (see `scan`).
    TooManyRequests,
}

const PAGES: [Page; 5] = [
    Page::NotFound,
    Page::Expired,
    Page::Disabled,
    Page::QueryTooLong,
    Page::TooManyRequests,
];

impl Page {
    /// Status, title and message.
    const fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Link not found",
                "No link has this code.",
            ),
            Self::Expired => (StatusCode::GONE, "Link expired", "This link has expired."),
            Self::Disabled => (
                StatusCode::GONE,
                "Link disabled",
                "This link has been disabled by the operators of this service.",
            ),
            Self::QueryTooLong => (
                StatusCode::URI_TOO_LONG,
                "Query too long",
                "The query string is too long to pass on to this link's target.",
            ),
            Self::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many requests for unknown links; please retry later.",
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    /// The answer to `request`, HTML or text by its `Accept`. Builds nothing: both bodies
    /// exist already, and a clone of either is a reference count.
    pub fn respond(self, request: &HttpRequest) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        // Vary: the same URL answers two ways. Nobody stores these (no-store), but a cache
        // that does anyway must not give a browser's page to a script or the other way round.
        response
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((VARY, "Accept"));
        let rendered = &RENDERED[self as usize];
        if wants_html(request) {
            html(&mut response).body(rendered.html.clone())
        } else {
            response
                .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(rendered.text.clone())
        }
    }
}

fn html(response: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    response
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        ))
}

struct Rendered {
    text: Bytes,
    html: Bytes,
}

/// Every page in both forms, indexed by `Page as usize`.
static RENDERED: LazyLock<Vec<Rendered>> = LazyLock::new(|| {
    PAGES
        .iter()
        .map(|page| {
            let (_, title, message) = page.parts();
            Rendered {
                text: Bytes::from(format!("{message}\n")),
                html: Bytes::from(render_html(title, message)),
            }
        })
        .collect()
});

fn render_html(title: &str, message: &str) -> String {
    let (title, message) = (escape(title), escape(message));
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n</head>\n\
         <body>\n<h1>{title}</h1>\n<p>{message}</p>\n</body>\n</html>\n"
    )
}

/// Text as HTML content or attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Whether `Accept` names `text/html` with a weight above zero. `*/*` and `text/*` do not
/// count: a client that names no type is not a browser navigating.
fn wants_html(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/html") && !parts.any(is_zero_weight)
        })
}

fn is_zero_weight(parameter: &str) -> bool {
    parameter.split_once('=').is_some_and(|(name, value)| {
        name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>() == Ok(0.0)
    })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const FIREFOX: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    fn accepting(accept: &str) -> HttpRequest {
        TestRequest::get()
            .insert_header((ACCEPT, accept))
            .to_http_request()
    }

    #[test]
    fn browsers_get_html_and_everything_else_text() {
        assert!(wants_html(&accepting(FIREFOX)));
        assert!(wants_html(&accepting(
            "application/json, TEXT/HTML ; q=0.5"
        )));
        assert!(!wants_html(&accepting("*/*")));
        assert!(!wants_html(&accepting("text/*")));
        assert!(!wants_html(&accepting("text/html;q=0, text/plain")));
        assert!(!wants_html(&TestRequest::get().to_http_request()));
    }

    #[test]
    fn pages_are_escaped_and_load_nothing() {
        let page = render_html("<a & 'b'>", "\"x\"");
        assert!(page.contains("<title>&lt;a &amp; &#39;b&#39;&gt;</title>"));
        assert!(page.contains("<p>&quot;x&quot;</p>"));
        for page in &*RENDERED {
            let html = std::str::from_utf8(&page.html).expect("utf-8");
            assert!(!html.contains("src="), "{html}");
            assert!(!html.contains("href="), "{html}");
            assert!(!html.contains("<script"), "{html}");
        }
    }

    #[test]
    fn every_page_has_its_own_rendering() {
        for page in PAGES {
            let (_, _, message) = page.parts();
            assert_eq!(RENDERED[page as usize].text, format!("{message}\n"));
        }
    }
}
