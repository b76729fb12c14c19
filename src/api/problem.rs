//! The API's one error type and its answer, RFC 9457 `application/problem+json`: `type`,
//! `title`, `status`, `detail`, and `field` when one input field is at fault. Handlers
//! return `Result<_, HttpError>`; a store error maps by its class, so no handler decides
//! status codes for database failures.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// The body of every error answer of the `/api/v1` routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` style tags under `/problems/`).
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, for rejected input.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request names something that does not exist (404).
    #[error("{detail}")]
    NotFound { detail: String },
    /// The request's input is not acceptable (422), naming the field.
    #[error("{field}: {detail}")]
    Rejected { field: String, detail: String },
    /// The request is not signed, or not by whom it claims (401).
    #[error("{detail}")]
    Unauthorized { detail: String },
    /// The request is valid but the state of what it names refuses it (409): a ticket
    /// not in a status that allows the step, a slot taken, an id already used.
    #[error("{detail}")]
    Conflict { detail: String },
    /// The caller's key may not do this (403).
    #[error("{detail}")]
    Forbidden { detail: String },
    /// The caller's key is over its rate limit (429 with `Retry-After`).
    #[error("over the rate limit of this key; retry in {retry_after_s} s")]
    TooManyRequests { retry_after_s: u64 },
    /// The path exists, the method does not (405).
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The store failed in a way that may pass (connection, pool exhausted, restart): 503
    /// with `Retry-After`.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// Anything else (500); the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The refusals every keyed route may answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// No key, an unknown or a revoked one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not do this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Nothing of that id (or not visible to this key).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The state of what the request names refuses it.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Input rejected: `field` names it.
    #[response(status = 422, content_type = "application/problem+json")]
    Rejected(Problem),
    /// Over the key's rate limit.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The database is unavailable for the moment.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl HttpError {
    pub fn rejected(field: &str, detail: impl Into<String>) -> HttpError {
        HttpError::Rejected {
            field: field.to_string(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound { .. } => StatusCode::NOT_FOUND,
            HttpError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden { .. } => StatusCode::FORBIDDEN,
            HttpError::Conflict { .. } => StatusCode::CONFLICT,
            HttpError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer's body: what the client may know.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, detail, field) = match self {
            HttpError::NotFound { detail } => ("not-found", detail.clone(), None),
            HttpError::Rejected { field, detail } => {
                ("rejected-input", detail.clone(), Some(field.clone()))
            }
            HttpError::Unauthorized { detail } => ("unauthorized", detail.clone(), None),
            HttpError::Forbidden { detail } => ("forbidden", detail.clone(), None),
            HttpError::Conflict { detail } => ("conflict", detail.clone(), None),
            HttpError::TooManyRequests { .. } => ("rate-limited", self.to_string(), None),
            HttpError::MethodNotAllowed { .. } => ("method-not-allowed", self.to_string(), None),
            HttpError::Unavailable(_) => (
                "unavailable",
                format!(
                    "the database is unavailable for the moment; retry in {RETRY_AFTER_SECONDS} s"
                ),
                None,
            ),
            HttpError::Internal(_) => (
                "internal",
                "the server failed to answer; the error is logged".to_string(),
                None,
            ),
        };
        Problem {
            problem_type: format!("/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail,
            field,
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> HttpError {
        if error.is_transient() {
            HttpError::Unavailable(error)
        } else if error.is_data_rejection() {
            // The data was refused by a database rule: the request's input, not the server.
            // The database's own message names tables and values: logged, never sent.
            tracing::info!(%error, "request data refused by the database");
            HttpError::Rejected {
                field: "body".to_string(),
                detail: "the data was refused by a rule of the database".to_string(),
            }
        } else if let StoreError::NoSuchModel { .. } = error {
            HttpError::NotFound {
                detail: error.to_string(),
            }
        } else {
            HttpError::Internal(error.to_string())
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match &self {
            HttpError::Internal(_) => tracing::error!(error = %self, "api request failed"),
            HttpError::Unavailable(_) => tracing::warn!(error = %self, "api request failed"),
            _ => tracing::debug!(error = %self, "api request refused"),
        }
        let problem = self.problem();
        let mut response = (self.status(), Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            HttpError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            HttpError::TooManyRequests { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            HttpError::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"forewarn\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// The answer to a method a known path does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> HttpError {
    HttpError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// The answer to a path no router knows.
pub async fn no_such_route(uri: Uri) -> HttpError {
    HttpError::NotFound {
        detail: format!("no route {}", uri.path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_by_class() {
        // Transient errors (503) are checked against a real closed pool in `tests/it/api.rs`.
        let no_model = StoreError::NoSuchModel {
            version: "v1".into(),
            failure_mode: "washer/bearing".into(),
        };
        assert_eq!(HttpError::from(no_model).status(), StatusCode::NOT_FOUND);
        assert_eq!(
            HttpError::from(StoreError::Unsupported("x")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn an_internal_error_does_not_leak_its_detail() {
        let problem = HttpError::Internal("password=hunter2 at db:5432".into()).problem();
        assert!(!problem.detail.contains("hunter2"), "{problem:?}");
        assert_eq!(problem.status, 500);
    }

    #[test]
    fn a_rejection_names_its_field() {
        let problem = HttpError::rejected("external_id", "too long").problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.field.as_deref(), Some("external_id"));
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "/problems/rejected-input");
    }
}
