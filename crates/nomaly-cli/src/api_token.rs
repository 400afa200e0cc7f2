//! The API token of `nomaly serve` (SECURITY.md, "The HTTP API"): where the server gets it and
//! where the terminal clients find it.
//!
//! The server takes `--token-file`, else `NOMALY_TOKEN`. Without either, on loopback it uses the
//! token in `<store>.token` beside its job store (`jobs.db` → `jobs.token`), made at first start
//! from 32 random bytes, readable by its owner only (0600); off loopback it refuses to start, so
//! a server reachable from the network always has a secret its operator chose. `--no-auth` turns
//! the token off, on loopback only. The clients send `NOMALY_TOKEN`, else the file named by
//! `--token-file` / `NOMALY_TOKEN_FILE`, else the default store's token file when it exists.
//! Tested through the binary: `tests/security` (`the_api_token_is_made_private_once`).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file beside a job store.
pub fn token_path(db: &Path) -> PathBuf {
    db.with_extension("token")
}

use nomaly_engine::ballista::auth::read_token_file;

/// What the server requires: `Some(token)`, or `None` with `--no-auth`. `generated` is where a
/// token made (or found) beside the store lives, for the start-up line.
pub struct ServerToken {
    pub token: Option<String>,
    pub generated: Option<PathBuf>,
}

/// The server's token by the rules of the module documentation.
pub fn server_token(
    token_file: Option<&Path>,
    no_auth: bool,
    bind: std::net::IpAddr,
    db: &Path,
) -> Result<ServerToken, String> {
    let given = match token_file {
        Some(f) => Some(read_token_file(f, "--token-file")?),
        None => std::env::var("NOMALY_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if no_auth {
        if !bind.is_loopback() {
            return Err(format!(
                "--no-auth is for loopback only; --bind {bind} is reachable from the network, so \
                 the API needs a token (NOMALY_TOKEN or --token-file)"
            ));
        }
        if given.is_some() {
            return Err("--no-auth with a token (NOMALY_TOKEN or --token-file): choose one".into());
        }
        return Ok(ServerToken {
            token: None,
            generated: None,
        });
    }
    if let Some(token) = given {
        return Ok(ServerToken {
            token: Some(token),
            generated: None,
        });
    }
    if !bind.is_loopback() {
        return Err(format!(
            "--bind {bind} is not a loopback address, so the API needs a token you choose: set \
             NOMALY_TOKEN or --token-file (clients send it as `Authorization: Bearer <token>`)"
        ));
    }
    let path = token_path(db);
    let token = generated_token(&path)?;
    Ok(ServerToken {
        token: Some(token),
        generated: Some(path),
    })
}

/// The token in `path`, made there (0600) if the file does not exist.
fn generated_token(path: &Path) -> Result<String, String> {
    let shown = path.display();
    if path.exists() {
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is readable by others (mode {:o}); `chmod 600 {shown}`, or remove it to \
                 have a new token made",
                mode & 0o777
            ));
        }
        return read_token_file(path, "the token file");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(token)
}

/// The token a terminal client sends: `NOMALY_TOKEN`, else `token_file`, else the default
/// store's token file if there is one.
pub fn client_token(
    token_file: Option<&Path>,
    default_db: &Path,
) -> Result<Option<String>, String> {
    if let Some(t) = std::env::var("NOMALY_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    if let Some(f) = token_file {
        return read_token_file(f, "--token-file").map(Some);
    }
    let default = token_path(default_db);
    Ok(read_token_file(&default, "the token file").ok())
}
