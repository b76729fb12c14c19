//! `/api/v1/devices`: the registry's view of a device.

use axum::Json;
use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Caller, Role};
use super::problem::HttpError;

pub fn router() -> Router<ApiState> {
    Router::new().route("/devices/{external_id}", get(device))
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    pub external_id: String,
    pub kind: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The device's last status message (`None`: never sent one).
    pub online: Option<bool>,
}

async fn device(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(external_id): Path<String>,
) -> Result<Json<DeviceView>, HttpError> {
    if !crate::contract::is_valid_device_external_id(&external_id) {
        return Err(HttpError::rejected(
            "external_id",
            "a device id is 1-64 characters of [A-Za-z0-9_.:-]",
        ));
    }
    let not_found = || HttpError::NotFound {
        detail: format!("no device {external_id:?}"),
    };
    caller.allow(&Role::ALL, "read devices")?;
    // A technician sees the devices of their jobs; any other is as if it did not exist.
    if let Some(technician_id) = caller.technician_id
        && !state
            .store
            .technician_sees_device(technician_id, &external_id)
            .await?
    {
        return Err(not_found());
    }
    let record = state
        .store
        .device(&external_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(DeviceView {
        external_id: record.external_id,
        kind: record.kind,
        last_seen_at: record.last_seen_at,
        online: record.online,
    }))
}
