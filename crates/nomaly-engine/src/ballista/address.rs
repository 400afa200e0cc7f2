//! Where a scheduler is: the one parser of `--engine ballista://…`, `--scheduler` and
//! `NOMALY_SCHEDULER`.

/// The scheduler port Ballista and `nomaly scheduler` use when none is given.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// A scheduler's `host:port` from `ballista://HOST[:PORT]`, `df://...`, `http://...` or a bare
/// `HOST[:PORT]` (port 50050 when left out).
pub fn scheduler_address(text: &str) -> std::result::Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let rest = ["ballista://", "df://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .unwrap_or(&lower)
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| {
                format!("'{text}': the port '{port}' is not a number from 1 to 65535")
            })?;
            (host, port)
        }
        None => (rest, DEFAULT_SCHEDULER_PORT),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "'{text}': expected ballista://HOST[:PORT], e.g. ballista://127.0.0.1:50050"
        ));
    }
    Ok(format!("{host}:{port}"))
}
