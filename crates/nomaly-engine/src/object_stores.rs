//! Remote inputs: the object store a URL needs (`s3://`, `gs://`, `az://`, `http(s)://`), built from
//! the environment variables each cloud's own tools read, and registered on the session so
//! DataFusion's listing tables and our chunk planner read through it.
//!
//! Credentials never appear in pipeline files: they come from the environment, like the AWS CLI,
//! gcloud and az do. The store's own retries are kept short (three, within 30 s) because a
//! pipeline retries whole chunks with its own backoff; a store that cannot be reached at all should
//! fail planning in seconds with a message that says which variables to check.

use crate::error::{EngineError, Result};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The kinds of remote store an input URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStore {
    S3,
    Gcs,
    Azure,
    Http,
}

impl RemoteStore {
    /// The store a location's scheme names; `None` for local paths and `file://`.
    pub fn of(location: &str) -> Option<RemoteStore> {
        let (scheme, _) = location.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(RemoteStore::S3),
            "gs" | "gcs" => Some(RemoteStore::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(RemoteStore::Azure),
            "http" | "https" => Some(RemoteStore::Http),
            _ => None,
        }
    }

    /// Where this store's settings come from: the sentence every store error ends with.
    pub fn settings_hint(self) -> &'static str {
        match self {
            RemoteStore::S3 => {
                "S3 settings come from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
                 (and AWS_SESSION_TOKEN), AWS_REGION, and AWS_ENDPOINT_URL for S3-compatible servers \
                 such as MinIO (e.g. AWS_ENDPOINT_URL=http://127.0.0.1:9000)"
            }
            RemoteStore::Gcs => {
                "Google Cloud Storage settings come from the environment: \
                 GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT (a service-account JSON \
                 file), or GOOGLE_SERVICE_ACCOUNT_KEY (its contents); for an emulator, a key with \
                 \"gcs_base_url\" and \"disable_oauth\": true, and GOOGLE_ALLOW_HTTP=true"
            }
            RemoteStore::Azure => {
                "Azure settings come from the environment: AZURE_STORAGE_ACCOUNT_NAME with \
                 AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or AZURE_CLIENT_ID/\
                 AZURE_CLIENT_SECRET/AZURE_TENANT_ID); AZURE_STORAGE_USE_EMULATOR=true for Azurite"
            }
            RemoteStore::Http => {
                "the server must answer HEAD and ranged GET requests; name files, not directories \
                 (listing a directory over HTTP needs WebDAV)"
            }
        }
    }
}

/// Client settings Nomaly defaults (a person's environment wins): a short connect timeout so an
/// unreachable endpoint fails planning in seconds, and a generous request timeout for large reads.
fn client_defaults(env_prefix: &str) -> Vec<(ClientConfigKey, &'static str)> {
    let set = |name: &str| std::env::var(format!("{env_prefix}{name}")).is_ok();
    let mut out = Vec::new();
    if !set("CONNECT_TIMEOUT") {
        out.push((ClientConfigKey::ConnectTimeout, "5s"));
    }
    if !set("TIMEOUT") {
        out.push((ClientConfigKey::Timeout, "120s"));
    }
    out
}

/// Few store-level retries: a pipeline retries whole chunks with its own backoff.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// A store built for one bucket, container or host, and the URL root it serves.
#[derive(Debug)]
pub struct BuiltStore {
    /// `scheme://authority/`: what DataFusion's object-store registry is keyed by.
    pub root: Url,
    pub kind: RemoteStore,
    pub store: Arc<dyn ObjectStore>,
}

/// Builds the store for `location`'s bucket/container/host from the environment.
pub fn build_remote_store(location: &str) -> Result<Option<BuiltStore>> {
    let Some(kind) = RemoteStore::of(location) else {
        return Ok(None);
    };
    let bad = |reason: String| EngineError::ObjectStore {
        location: location.to_string(),
        reason,
        hint: kind.settings_hint().to_string(),
    };
    let url = Url::parse(location).map_err(|e| bad(format!("not a valid URL ({e})")))?;
    let host = url.host_str().unwrap_or_default().to_string();
    if host.is_empty() {
        return Err(bad(match kind {
            RemoteStore::Http => "the URL names no host".to_string(),
            _ => "the URL names no bucket or container; write it as scheme://bucket/path".into(),
        }));
    }
    let store: Arc<dyn ObjectStore> = match kind {
        RemoteStore::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&host)
                .with_retry(retry_config());
            for (key, value) in client_defaults("AWS_") {
                b = b.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            // An explicit http:// endpoint (MinIO on a laptop) is a choice, not an accident.
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_default();
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(|e| bad(root_message(&e)))?)
        }
        RemoteStore::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&host)
                .with_retry(retry_config());
            for (key, value) in client_defaults("GOOGLE_") {
                b = b.with_config(GoogleConfigKey::Client(key), value);
            }
            Arc::new(b.build().map_err(|e| bad(root_message(&e)))?)
        }
        RemoteStore::Azure => {
            // Emulator mode (Azurite) allows plain HTTP by itself.
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(location)
                .with_retry(retry_config());
            for (key, value) in client_defaults("AZURE_") {
                b = b.with_config(AzureConfigKey::Client(key), value);
            }
            Arc::new(b.build().map_err(|e| bad(root_message(&e)))?)
        }
        RemoteStore::Http => {
            let mut b = HttpBuilder::new()
                .with_url(format!("{}://{}", url.scheme(), url.authority()))
                .with_retry(retry_config())
                .with_config(ClientConfigKey::AllowHttp, "true");
            for (key, value) in client_defaults("NOMALY_HTTP_") {
                b = b.with_config(key, value);
            }
            Arc::new(b.build().map_err(|e| bad(root_message(&e)))?)
        }
    };
    let root = Url::parse(&format!("{}://{}", url.scheme(), url.authority()))
        .map_err(|e| bad(format!("not a valid URL ({e})")))?;
    Ok(Some(BuiltStore { root, kind, store }))
}

/// The listing URL of a location. DataFusion splits a glob off local paths only; for object
/// stores the part from the first segment holding `*`, `?` or `[` becomes the glob here, so
/// `s3://bucket/tx/*.parquet` lists `tx/` and keeps the Parquet files. (HTTP has no listing, and
/// `?` starts its query string, so HTTP URLs are taken as written.)
pub fn listing_url(location: &str) -> datafusion::error::Result<ListingTableUrl> {
    use datafusion::error::DataFusionError;
    match RemoteStore::of(location) {
        Some(RemoteStore::Http) | None => ListingTableUrl::parse(location),
        Some(_) => {
            let Some(first) = location.find(['*', '?', '[']) else {
                return ListingTableUrl::parse(location);
            };
            let cut = location[..first].rfind('/').map(|j| j + 1).unwrap_or(first);
            let (prefix, pattern) = location.split_at(cut);
            let url = Url::parse(prefix).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let glob =
                glob::Pattern::new(pattern).map_err(|e| DataFusionError::External(Box::new(e)))?;
            ListingTableUrl::try_new(url, Some(glob))
        }
    }
}

/// An object-store registry that builds the store a URL needs on first use, from the environment
/// ([`build_remote_store`]): what an executor of a cluster uses, since no client registers stores
/// on it. The plans name `s3://bucket/...`; the executor's own environment holds the credentials.
#[derive(Debug, Default)]
pub struct EnvObjectStoreRegistry {
    known: datafusion::execution::object_store::DefaultObjectStoreRegistry,
}

impl datafusion::execution::object_store::ObjectStoreRegistry for EnvObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        match build_remote_store(url.as_str()) {
            Ok(Some(built)) => {
                self.known.register_store(&built.root, built.store.clone());
                Ok(built.store)
            }
            Ok(None) => self.known.get_store(url),
            Err(e) => Err(datafusion::error::DataFusionError::External(Box::new(e))),
        }
    }
}

/// Registers the store `location` needs on the session (no-op for local paths and `file://`).
/// Registering the same bucket twice replaces the store with an identical one.
pub fn register_object_store(ctx: &SessionContext, location: &str) -> Result<()> {
    if let Some(built) = build_remote_store(location)? {
        ctx.register_object_store(&built.root, built.store);
    }
    Ok(())
}

/// The innermost message of an error chain: store errors nest the HTTP client's, whose root
/// ("connection refused", "dns error") is what a person can act on.
pub fn root_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    without_xml_body(&parts.join(": "))
}

/// S3 and Azure errors carry the server's XML error document; its `<Code>` and `<Message>` are the
/// part worth reading ("NoSuchBucket: The specified bucket does not exist").
fn without_xml_body(text: &str) -> String {
    let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text.to_string();
    };
    let tag = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let from = text[start..].find(&open)? + start + open.len();
        let to = text[from..].find(&format!("</{name}>"))? + from;
        Some(text[from..to].trim())
    };
    let end = text[start..]
        .find("</Error>")
        .map(|i| start + i + "</Error>".len())
        .unwrap_or(text.len());
    let summary = match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {}", m.lines().next().unwrap_or(m)),
        (Some(c), None) => c.to_string(),
        _ => "an error document".to_string(),
    };
    format!("{}{summary}{}", &text[..start], &text[end..])
}

/// Turns a store failure while planning (listing, reading a footer or the head of a file) into a
/// user error that names the URL and where its settings come from. `None` for local locations and
/// for errors that are not the store's (a parse error in a remote file stays a parse error).
pub fn planning_error(
    location: &str,
    e: &(dyn std::error::Error + 'static),
) -> Option<EngineError> {
    let kind = RemoteStore::of(location)?;
    let store_error = find_store_error(e)?;
    let reason = match store_error {
        object_store::Error::NotFound { path, .. } => format!("'{path}' does not exist"),
        other => format!("cannot list or read it: {}", root_message(other)),
    };
    Some(EngineError::ObjectStore {
        location: location.to_string(),
        reason,
        hint: kind.settings_hint().to_string(),
    })
}

/// The object-store error in an error chain, if there is one.
fn find_store_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a object_store::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<object_store::Error>() {
            return Some(s);
        }
        if let Some(datafusion::error::DataFusionError::ObjectStore(s)) =
            err.downcast_ref::<datafusion::error::DataFusionError>()
        {
            return Some(s.as_ref());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_store() {
        assert_eq!(RemoteStore::of("s3://b/k.parquet"), Some(RemoteStore::S3));
        assert_eq!(RemoteStore::of("S3A://b/k"), Some(RemoteStore::S3));
        assert_eq!(RemoteStore::of("gs://b/k"), Some(RemoteStore::Gcs));
        assert_eq!(RemoteStore::of("az://c/k"), Some(RemoteStore::Azure));
        assert_eq!(
            RemoteStore::of("abfss://c@a.dfs.core.windows.net/k"),
            Some(RemoteStore::Azure)
        );
        assert_eq!(RemoteStore::of("https://h/k.csv"), Some(RemoteStore::Http));
        assert_eq!(RemoteStore::of("file:///tmp/x"), None);
        assert_eq!(RemoteStore::of("/tmp/x"), None);
    }

    #[test]
    fn a_url_without_a_bucket_is_refused_with_the_form_to_use() {
        let e = build_remote_store("s3:///k.parquet").expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("s3:///k.parquet"), "{text}");
        assert!(text.contains("scheme://bucket/path"), "{text}");
        assert!(text.contains("AWS_ENDPOINT_URL"), "{text}");
    }

    #[test]
    fn xml_error_documents_shrink_to_code_and_message() {
        let text = "GET http://h/b failed: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\
                    <Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            without_xml_body(text),
            "GET http://h/b failed: 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(without_xml_body("plain"), "plain");
    }

    #[test]
    fn remote_globs_list_their_fixed_prefix() {
        let url = listing_url("s3://b/tx/2026-*/*.parquet").unwrap();
        assert_eq!(url.prefix().as_ref(), "tx");
        assert_eq!(
            url.get_glob().as_ref().map(|g| g.as_str()),
            Some("2026-*/*.parquet")
        );
        let url = listing_url("gs://b/tx/a.parquet").unwrap();
        assert_eq!(url.prefix().as_ref(), "tx/a.parquet");
        assert!(url.get_glob().is_none());
        let url = listing_url("http://h/x.csv?token=1").unwrap();
        assert!(url.get_glob().is_none());
    }

    #[test]
    fn http_stores_are_rooted_at_the_host() {
        let built = build_remote_store("http://127.0.0.1:8080/data/tx.parquet")
            .expect("built")
            .expect("remote");
        assert_eq!(built.kind, RemoteStore::Http);
        assert_eq!(built.root.as_str(), "http://127.0.0.1:8080/");
    }
}
