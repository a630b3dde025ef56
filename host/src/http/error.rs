//! The API's one error shape, `{"error": {"code", "message"}}` with the status that fits, and
//! the extractors that turn bad requests into it (axum's own rejections are plain text).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tracing::warn;

use eventhost_store::StoreError;

/// A refused request: its status, a stable code a client can match, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_input`, `version_conflict`, `not_found`...
    code: String,
    /// For people: what was wrong, naming the field, the event or the versions.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InAppend { index, source } => {
                let inner = Self::from(*source);
                Self {
                    message: format!("events[{index}]: {} (nothing was written)", inner.message),
                    ..inner
                }
            }
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "version_conflict", error.to_string())
            }
            StoreError::PartialDuplicate { .. } => {
                Self::new(StatusCode::CONFLICT, "partial_duplicate", error.to_string())
            }
            StoreError::PayloadTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                error.to_string(),
            ),
            StoreError::Invalid(message) => Self::bad_request(message),
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Database { .. }
            | StoreError::Connect { .. }
            | StoreError::FileGone { .. }
            | StoreError::ReadOnly { .. } => {
                warn!(error = %error, "HTTP request failed on the store");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("the store is unavailable: {error}"),
                )
            }
            other => {
                warn!(error = %other, "HTTP request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                return Self::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON, sent with `Content-Type: application/json`",
                );
            }
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            _ => (rejection.status(), "bad_request"),
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

/// A JSON object body, refused with [`ApiError`]s.
///
/// Every body the API takes is an object: an array is refused even where serde would read
/// it as the object's fields in order (`[]` for an object whose fields all have defaults).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(raw) = axum::Json::<Box<RawValue>>::from_request(request, state).await?;
        if !raw.get().starts_with('{') {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(raw.get().as_bytes())?;
        Ok(Self(value))
    }
}

/// Path parameters, refused with [`ApiError`]s.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("the path", parts.uri.path())?;
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Query parameters, refused with [`ApiError`]s.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("the query", parts.uri.query().unwrap_or_default())?;
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Refuses a NUL character (also percent-encoded, `%00`) in a path or query string: no
/// name, key or filter may hold one (PostgreSQL cannot keep it).
fn refuse_nul(what: &str, raw: &str) -> Result<(), ApiError> {
    if percent_decode_str(raw).any(|byte| byte == 0) {
        return Err(ApiError::bad_request(format!(
            "{what} holds a NUL character (%00), which no name may hold"
        )));
    }
    Ok(())
}

/// A name a client sent in a JSON body: no NUL character.
pub fn name<'a>(field: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(text) if text.contains('\0') => Err(ApiError::bad_request(format!(
            "{field}: holds a NUL character, which no name may hold"
        ))),
        other => Ok(other),
    }
}

/// A `limit` a client wrote: 1 to `max`, `default` when not given.
pub fn limit(text: Option<&str>, default: u64, max: u64) -> Result<usize, ApiError> {
    match number("limit", text, default, max)? {
        0 => Err(ApiError::bad_request(format!(
            "limit: expected a whole number from 1 to {max}, got \"0\""
        ))),
        limit => Ok(usize::try_from(limit).unwrap_or(usize::MAX)),
    }
}

/// A position or version a client sent in a JSON body, within what the store keeps.
pub fn stored(name: &str, value: u64) -> Result<u64, ApiError> {
    if value > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!(
            "{name}: expected a whole number from 0 to {}, got {value}",
            i64::MAX
        )));
    }
    Ok(value)
}

/// A whole number a client wrote for `name`, within what the store keeps (`0..=i64::MAX`)
/// and `max`.
pub fn number(name: &str, text: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let max = max.min(i64::MAX as u64);
    match text.parse::<u64>() {
        Ok(value) if value <= max => Ok(value),
        _ => Err(ApiError::bad_request(format!(
            "{name}: expected a whole number from 0 to {max}, got {text:?}"
        ))),
    }
}
