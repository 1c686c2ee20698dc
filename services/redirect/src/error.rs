//! The one place where failures of the redirect path become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use std::sync::Arc;

use kurz_repository::RepoError;

/// Why a redirect could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// 503 with `Retry-After`: PostgreSQL was needed (a cache miss, or any request to a link
    /// with a visit limit) and is unavailable. Shared: every request that waited for the same
    /// single-flight load gets it.
    #[error("link storage is unavailable")]
    Unavailable(#[source] Arc<RepoError>),
    /// 500: anything else; the detail goes to the log, not to the client.
    #[error("internal error")]
    Internal(#[source] Arc<RepoError>),
}

impl From<Arc<RepoError>> for RedirectError {
    fn from(e: Arc<RepoError>) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e)
        } else {
            Self::Internal(e)
        }
    }
}

/// A visit check: a limited link fails closed, so its limit is never exceeded.
impl From<RepoError> for RedirectError {
    fn from(e: RepoError) -> Self {
        Arc::new(e).into()
    }
}

impl ResponseError for RedirectError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!(error = ?self, "redirect failed");
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
            .insert_header((CACHE_CONTROL, "no-store"));
        match self {
            Self::Unavailable(_) => response
                .insert_header((RETRY_AFTER, "1"))
                .body("Service temporarily unavailable, please retry.\n"),
            Self::Internal(_) => response.body("Internal error.\n"),
        }
    }
}
