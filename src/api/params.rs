//! The input of the `/api/v1` routes, checked one way: every query, path and body value is
//! parsed here or by a handler with these helpers, and anything wrong is a 422
//! problem+json naming the field — never axum's plain-text rejections, never a 5xx.
//! Lists page by an opaque cursor (`next_cursor`), at most [`MAX_LIMIT`] items a page;
//! time ranges are RFC 3339 and at most a route's own span.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use super::problem::HttpError;

/// Items of a page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most items of one page.
pub const MAX_LIMIT: i64 = 500;
/// The largest JSON body a route reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A page of a list: `next_cursor` (absent on the last page) asks for the next.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `items` fetched with one more than `limit`: the extra one says there is
    /// a next page, whose cursor `cursor_of` makes from the page's last item.
    pub fn of(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// A list of everything (no paging).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// Query parameters, with a rejected query a 422 naming `query`.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| HttpError::rejected("query", rejection.body_text()))
    }
}

/// Path parameters, with a rejected path a 422 naming `path`.
pub struct PathOf<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathOf<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathOf(value))
            .map_err(|rejection| HttpError::rejected("path", rejection.body_text()))
    }
}

/// A JSON object body: `Content-Type: application/json`, at most [`MAX_BODY_BYTES`], and a value
/// that does not deserialize is a 422 naming the field at fault (`technician`,
/// `shift_days[2]`).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, HttpError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(HttpError::rejected(
                "content-type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                HttpError::rejected(
                    "body",
                    format!("the body is unreadable or over {MAX_BODY_BYTES} bytes"),
                )
            })?;
        // Every body is an object (serde would also read a struct from an array).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(HttpError::rejected("body", "a JSON object"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let message = error.inner().to_string();
            // A missing field is reported at its parent: name the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                ("." | "", Some(name)) => name.to_string(),
                (parent, Some(name)) => format!("{parent}.{name}"),
                ("." | "", None) => "body".to_string(),
                (path, None) => path.to_string(),
            };
            HttpError::rejected(&field, message)
        })?;
        deserializer
            .end()
            .map_err(|e| HttpError::rejected("body", e.to_string()))?;
        Ok(Body(value))
    }
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(text: Option<&str>) -> Result<i64, HttpError> {
    bounded("limit", text, 1, MAX_LIMIT).map(|v| v.unwrap_or(DEFAULT_LIMIT))
}

/// An integer in `[min, max]`, or `None` when absent or empty.
pub fn bounded(
    field: &str,
    text: Option<&str>,
    min: i64,
    max: i64,
) -> Result<Option<i64>, HttpError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<i64>() {
        Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
        _ => Err(HttpError::rejected(
            field,
            format!("an integer from {min} to {max}"),
        )),
    }
}

/// A number in `[min, max]`, or `None` when absent or empty.
pub fn number(
    field: &str,
    text: Option<&str>,
    min: f64,
    max: f64,
) -> Result<Option<f64>, HttpError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && (min..=max).contains(&value) => Ok(Some(value)),
        _ => Err(HttpError::rejected(
            field,
            format!("a number from {min} to {max}"),
        )),
    }
}

/// The earliest and latest times the API accepts: PostgreSQL's and chrono's ranges are far
/// wider, but nothing forewarn keeps is outside these.
const EARLIEST_YEAR: i32 = 1970;
const LATEST_YEAR: i32 = 2200;

/// An RFC 3339 time (`2026-11-24T08:00:00Z`), or `None` when absent or empty.
pub fn time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, HttpError> {
    use chrono::Datelike;
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| HttpError::rejected(field, "an RFC 3339 time, e.g. 2026-11-24T08:00:00Z"))?
        .with_timezone(&Utc);
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&parsed.year()) {
        return Err(HttpError::rejected(
            field,
            format!("a time from {EARLIEST_YEAR} to {LATEST_YEAR}"),
        ));
    }
    Ok(Some(parsed))
}

/// A required time of a body, checked like [`time`].
pub fn checked_time(field: &str, value: DateTime<Utc>) -> Result<DateTime<Utc>, HttpError> {
    time(field, Some(&value.to_rfc3339())).map(|t| t.unwrap_or(value))
}

/// `from` and `to`: `to` defaults to `now` (inclusive: a second after it), `from` to `default_span` before `to`; `from`
/// must come before `to`, at most `max_span` apart.
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
    default_span: Duration,
    max_span: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), HttpError> {
    let to_time = time("to", to)?;
    let from_time = time("from", from)?;
    // "Now" includes what happened at this very moment (a reading at the fleet's clock).
    let now = now + Duration::seconds(1);
    let (from, to) = match (from_time, to_time) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (from, (from + default_span).min(now.max(from))),
        (None, Some(to)) => (to - default_span, to),
        (None, None) => (now - default_span, now),
    };
    if from >= to {
        return Err(HttpError::rejected("from", "must come before to"));
    }
    if to - from > max_span {
        return Err(HttpError::rejected(
            "from",
            format!("from and to at most {} days apart", max_span.num_days()),
        ));
    }
    Ok((from, to))
}

/// A cursor of a list ordered by a numeric id: the last id seen.
pub fn id_cursor(text: Option<&str>) -> Result<Option<i64>, HttpError> {
    bounded("cursor", text, 0, i64::MAX)
}

/// A positive id in a path (`/tickets/{id}`).
pub fn path_id(field: &str, text: &str) -> Result<i64, HttpError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(HttpError::rejected(field, "a positive integer id")),
    }
}

/// A text field: trimmed, 1 to `max` characters, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, HttpError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(HttpError::rejected(field, format!("1 to {max} characters")));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(HttpError::rejected(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(trimmed.to_string())
}

/// An optional text field, checked like [`text`] when present and not empty.
pub fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, HttpError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => text(field, v, max).map(Some),
        None => Ok(None),
    }
}

/// One of `allowed`, or `None` when absent or empty.
pub fn one_of<'a>(
    field: &str,
    text: Option<&str>,
    allowed: &[&'a str],
) -> Result<Option<&'a str>, HttpError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    allowed
        .iter()
        .find(|a| **a == text)
        .copied()
        .map(Some)
        .ok_or_else(|| HttpError::rejected(field, format!("one of {}", allowed.join(", "))))
}

/// A comma-separated list of values each one of `allowed` (`status=open,booked`).
pub fn many_of(
    field: &str,
    text: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<String>, HttpError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|part| {
            let part = part.trim();
            allowed
                .contains(&part)
                .then(|| part.to_string())
                .ok_or_else(|| {
                    HttpError::rejected(
                        field,
                        format!("comma-separated, each one of {}", allowed.join(", ")),
                    )
                })
        })
        .collect()
}

/// A device id as the contract allows it.
pub fn device_id(field: &str, text: &str) -> Result<String, HttpError> {
    if crate::contract::is_valid_device_external_id(text) {
        Ok(text.to_string())
    } else {
        Err(HttpError::rejected(
            field,
            "1-64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

/// An external id of a customer or technician: 1 to 64 visible characters.
pub fn external_id(field: &str, text: &str) -> Result<String, HttpError> {
    if !text.is_empty() && text.chars().count() <= 64 && text.chars().all(|c| c.is_ascii_graphic())
    {
        Ok(text.to_string())
    } else {
        Err(HttpError::rejected(field, "1-64 visible ASCII characters"))
    }
}

/// A latitude and longitude, each in its range.
pub fn coordinates(latitude: f64, longitude: f64) -> Result<(f64, f64), HttpError> {
    if !(latitude.is_finite() && (-90.0..=90.0).contains(&latitude)) {
        return Err(HttpError::rejected("latitude", "a number from -90 to 90"));
    }
    if !(longitude.is_finite() && (-180.0..=180.0).contains(&longitude)) {
        return Err(HttpError::rejected(
            "longitude",
            "a number from -180 to 180",
        ));
    }
    Ok((latitude, longitude))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_and_refuse() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (from, to) = range(None, None, now, Duration::days(7), Duration::days(31)).unwrap();
        assert_eq!((to - from).num_days(), 7);
        assert!(to > now && to - now <= Duration::seconds(1));
        let refused = range(
            Some("2026-11-24T00:00:00Z"),
            Some("2026-11-01T00:00:00Z"),
            now,
            Duration::days(7),
            Duration::days(31),
        );
        assert!(matches!(refused, Err(HttpError::Rejected { field, .. }) if field == "from"));
        let wide = range(
            Some("2020-01-01T00:00:00Z"),
            None,
            now,
            Duration::days(7),
            Duration::days(31),
        );
        assert!(wide.is_ok(), "a from alone spans the default: {wide:?}");
        let too_wide = range(
            Some("2020-01-01T00:00:00Z"),
            Some("2026-01-01T00:00:00Z"),
            now,
            Duration::days(7),
            Duration::days(31),
        );
        assert!(too_wide.is_err());
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(time("from", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_name_their_field() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        for bad in ["0", "501", "-1", "x", "1e3"] {
            match limit(Some(bad)) {
                Err(HttpError::Rejected { field, .. }) => assert_eq!(field, "limit"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(number("min_risk", Some("NaN"), 0.0, 1.0).is_err());
        assert_eq!(
            many_of("status", Some("open,booked"), &["open", "booked"])
                .unwrap()
                .len(),
            2
        );
        assert!(many_of("status", Some("open,nope"), &["open"]).is_err());
        assert!(text("note", "  ", 10).is_err());
        assert!(text("note", "a\u{0}b", 10).is_err());
        assert!(path_id("id", "0").is_err());
        assert!(path_id("id", "99999999999999999999").is_err());
        assert!(coordinates(91.0, 0.0).is_err());
    }

    #[test]
    fn pages_say_when_there_is_more() {
        let page = Page::of(vec![1_i64, 2, 3], 2, |v| v.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        let last = Page::of(vec![1_i64, 2], 2, |v| v.to_string());
        assert_eq!(last.next_cursor, None);
    }
}
