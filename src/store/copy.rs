//! PGCOPY binary encoding of telemetry rows. sqlx has no row encoder for COPY; the format is
//! small: a header, then per row a field count and length-prefixed big-endian fields.

use super::write::TelemetryColumns;

const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Encodes rows for `copy telemetry (time, device_id, metric_id, value, time_estimated)
/// from stdin (format binary)`.
pub(super) fn encode_telemetry(rows: &TelemetryColumns) -> Vec<u8> {
    let n_rows = rows.len();
    // Per row: 2 (field count) + 5 × 4 (lengths) + 8 + 4 + 2 + 8 + 1 (values).
    let mut buffer = Vec::with_capacity(HEADER.len() + 8 + n_rows * 45 + 2);
    buffer.extend_from_slice(HEADER);
    buffer.extend_from_slice(&0i32.to_be_bytes()); // flags
    buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for row_idx in 0..n_rows {
        buffer.extend_from_slice(&5i16.to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer
            .extend_from_slice(&(rows.time[row_idx] - POSTGRES_EPOCH_OFFSET_MICROS).to_be_bytes());
        buffer.extend_from_slice(&4i32.to_be_bytes());
        buffer.extend_from_slice(&rows.device_id[row_idx].to_be_bytes());
        buffer.extend_from_slice(&2i32.to_be_bytes());
        buffer.extend_from_slice(&rows.metric_id[row_idx].to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&rows.value[row_idx].to_bits().to_be_bytes());
        buffer.extend_from_slice(&1i32.to_be_bytes());
        buffer.push(u8::from(rows.time_estimated[row_idx]));
    }
    buffer.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
    buffer
}

/// Encodes rows for `copy telemetry_hourly (bucket, device_id, metric_id, avg, min, max,
/// stddev, count) from stdin (format binary)`; stddev is null and count 1 (benchmarks write
/// the rollup directly).
pub(super) fn encode_hourly(rows: &[crate::features::HourlyRow]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(HEADER.len() + 8 + rows.len() * 80 + 2);
    buffer.extend_from_slice(HEADER);
    buffer.extend_from_slice(&0i32.to_be_bytes());
    buffer.extend_from_slice(&0i32.to_be_bytes());
    for row in rows {
        buffer.extend_from_slice(&8i16.to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&(row.bucket - POSTGRES_EPOCH_OFFSET_MICROS).to_be_bytes());
        buffer.extend_from_slice(&4i32.to_be_bytes());
        buffer.extend_from_slice(&row.device_id.to_be_bytes());
        buffer.extend_from_slice(&2i32.to_be_bytes());
        buffer.extend_from_slice(&row.metric_id.to_be_bytes());
        for value in [row.avg, row.min, row.max] {
            buffer.extend_from_slice(&8i32.to_be_bytes());
            buffer.extend_from_slice(&value.to_bits().to_be_bytes());
        }
        buffer.extend_from_slice(&(-1i32).to_be_bytes()); // stddev: null
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&1i64.to_be_bytes());
    }
    buffer.extend_from_slice(&(-1i16).to_be_bytes());
    buffer
}

/// Encodes rows for `copy predictions (time, device_id, failure_mode, probability, horizon,
/// model_version, above_threshold, top_factors) from stdin (format binary)`.
pub(super) fn encode_predictions(rows: &[super::PredictionRow]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(HEADER.len() + 8 + rows.len() * 400 + 2);
    buffer.extend_from_slice(HEADER);
    buffer.extend_from_slice(&0i32.to_be_bytes());
    buffer.extend_from_slice(&0i32.to_be_bytes());
    let text = |buffer: &mut Vec<u8>, bytes: &[u8]| {
        buffer.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        buffer.extend_from_slice(bytes);
    };
    for row in rows {
        buffer.extend_from_slice(&8i16.to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(
            &(row.time.timestamp_micros() - POSTGRES_EPOCH_OFFSET_MICROS).to_be_bytes(),
        );
        buffer.extend_from_slice(&4i32.to_be_bytes());
        buffer.extend_from_slice(&row.device_id.to_be_bytes());
        text(&mut buffer, row.failure_mode.as_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&row.probability.to_bits().to_be_bytes());
        // interval: microseconds, days, months (as make_interval(secs => hours * 3600)).
        buffer.extend_from_slice(&16i32.to_be_bytes());
        let micros = (row.horizon_hours * 3600.0 * 1e6).round() as i64;
        buffer.extend_from_slice(&micros.to_be_bytes());
        buffer.extend_from_slice(&0i32.to_be_bytes());
        buffer.extend_from_slice(&0i32.to_be_bytes());
        text(&mut buffer, row.model_version.as_bytes());
        buffer.extend_from_slice(&1i32.to_be_bytes());
        buffer.push(u8::from(row.above_threshold));
        // jsonb: a version byte (1), then the text.
        let json = row.top_factors.to_string();
        buffer.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
        buffer.push(1);
        buffer.extend_from_slice(json.as_bytes());
    }
    buffer.extend_from_slice(&(-1i16).to_be_bytes());
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_encodes_to_the_documented_layout() {
        let mut rows = TelemetryColumns::default();
        rows.push(POSTGRES_EPOCH_OFFSET_MICROS + 1, 7, 3, 1.5, true);
        let bytes = encode_telemetry(&rows);
        assert_eq!(&bytes[..11], HEADER);
        assert_eq!(bytes.len(), 11 + 8 + 45 + 2);
        // field count, then the time field: length 8, value 1 µs after the PostgreSQL epoch
        assert_eq!(&bytes[19..21], &5i16.to_be_bytes());
        assert_eq!(&bytes[21..25], &8i32.to_be_bytes());
        assert_eq!(&bytes[25..33], &1i64.to_be_bytes());
        assert_eq!(
            bytes[bytes.len() - 3],
            1,
            "time_estimated is the last field"
        );
        assert_eq!(&bytes[bytes.len() - 2..], &(-1i16).to_be_bytes());
    }
}
