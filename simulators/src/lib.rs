//! The fleet simulator: devices that wear out, break, and tell the truth about it
//! afterwards. Deterministic for a seed. See `README.md` for every model.

/// Health index of one component: onset, progression, failure, repair.
pub mod degradation;
/// Technicians and customers answering forewarn: the demo's closed loop.
pub mod field;
/// Device kinds: metrics, usage and failure modes.
pub mod fleet;
/// `history` mode: the past written into the database.
pub mod history;
/// `live` mode: publishing over MQTT on an accelerated clock.
pub mod live;
/// Customers and technicians in real cities.
pub mod people;
/// Precision, recall and lead time of flags against the ground truth.
pub mod score;
/// The fleet and its per-device sample streams.
pub mod sim;

/// Writes the ground truth as JSON lines.
pub fn write_truth(path: &std::path::Path, truth: &[sim::TruthRecord]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for record in truth {
        serde_json::to_writer(&mut file, record)?;
        file.write_all(b"\n")?;
    }
    file.flush()
}

/// Reads JSON lines of `T` (truth records, flags).
pub fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(line_idx, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), line_idx + 1))
        })
        .collect()
}
