//! PGCOPY binary encoding of telemetry rows. sqlx has no row encoder for COPY; the format is
//! small: a header, then per row a field count and length-prefixed big-endian fields.

use super::telemetry::TelemetryColumns;

/// Runs one `copy … from stdin (format binary)` with `encoded` rows on `connection`;
/// aborts the copy when sending fails, so the connection is usable again.
pub(super) async fn copy_binary(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    encoded: Vec<u8>,
) -> Result<u64, sqlx::Error> {
    let mut copy_in = connection.copy_in_raw(statement).await?;
    if let Err(error) = copy_in.send(encoded).await {
        copy_in.abort("send failed").await.ok();
        return Err(error);
    }
    copy_in.finish().await
}

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

/// Decodes `copy (select device_id, metric_id, bucket, avg, min, max …) to stdout (format
/// binary)` as the data arrives (chunks do not end on row boundaries).
#[derive(Default)]
pub(super) struct HourlyDecoder {
    pending: Vec<u8>,
    header_read: bool,
    rows: Vec<crate::features::HourlyRow>,
    done: bool,
}

/// Per row: field count, then six length-prefixed fields (4 + 2 + 8 + 3 × 8 bytes).
const HOURLY_ROW_BYTES: usize = 2 + 6 * 4 + 4 + 2 + 8 + 3 * 8;

impl HourlyDecoder {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let data = &self.pending;
        if !self.header_read {
            // Signature, flags, header extension (its length, then its bytes).
            if data.len() < HEADER.len() + 8 {
                return;
            }
            let extension = i32::from_be_bytes(data[15..19].try_into().unwrap_or([0; 4]));
            at = HEADER.len() + 8 + extension.max(0) as usize;
            if data.len() < at {
                return;
            }
            self.header_read = true;
        }
        let be_i64 = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        let be_f64 = |b: &[u8]| f64::from_bits(u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
        while !self.done && at + 2 <= data.len() {
            if data[at..at + 2] == (-1i16).to_be_bytes() {
                self.done = true;
                at += 2;
                break;
            }
            if at + HOURLY_ROW_BYTES > data.len() {
                break;
            }
            // No column is nullable: every field has its fixed length.
            let row = &data[at + 2..at + HOURLY_ROW_BYTES];
            self.rows.push(crate::features::HourlyRow {
                device_id: i32::from_be_bytes(row[4..8].try_into().unwrap_or([0; 4])),
                metric_id: i16::from_be_bytes(row[12..14].try_into().unwrap_or([0; 2])),
                bucket: be_i64(&row[18..26]) + POSTGRES_EPOCH_OFFSET_MICROS,
                avg: be_f64(&row[30..38]),
                min: be_f64(&row[42..50]),
                max: be_f64(&row[54..62]),
            });
            at += HOURLY_ROW_BYTES;
        }
        self.pending.drain(..at);
    }

    pub(super) fn finish(self) -> Result<Vec<crate::features::HourlyRow>, &'static str> {
        if self.done && self.pending.is_empty() {
            Ok(self.rows)
        } else {
            Err("the data ended before its trailer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_rows_decode_from_any_chunking() {
        let rows: Vec<crate::features::HourlyRow> = (0..5)
            .map(|i| crate::features::HourlyRow {
                device_id: 7 + i,
                metric_id: 3,
                bucket: POSTGRES_EPOCH_OFFSET_MICROS + 3_600_000_000 * i64::from(i),
                avg: 1.5 * f64::from(i),
                min: -1.0,
                max: 2.0,
            })
            .collect();
        // encode_hourly writes 8 fields; the load reads 6: write the 6-field layout here.
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        for row in &rows {
            bytes.extend_from_slice(&6i16.to_be_bytes());
            bytes.extend_from_slice(&4i32.to_be_bytes());
            bytes.extend_from_slice(&row.device_id.to_be_bytes());
            bytes.extend_from_slice(&2i32.to_be_bytes());
            bytes.extend_from_slice(&row.metric_id.to_be_bytes());
            bytes.extend_from_slice(&8i32.to_be_bytes());
            bytes.extend_from_slice(&(row.bucket - POSTGRES_EPOCH_OFFSET_MICROS).to_be_bytes());
            for value in [row.avg, row.min, row.max] {
                bytes.extend_from_slice(&8i32.to_be_bytes());
                bytes.extend_from_slice(&value.to_bits().to_be_bytes());
            }
        }
        bytes.extend_from_slice(&(-1i16).to_be_bytes());
        for chunk_size in [1, 7, 64, bytes.len()] {
            let mut decoder = HourlyDecoder::default();
            for chunk in bytes.chunks(chunk_size) {
                decoder.push(chunk);
            }
            assert_eq!(decoder.finish().unwrap(), rows, "chunks of {chunk_size}");
        }
    }

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
