//! `ca_file` for the HTTP connections: a workspace or a directory provider whose
//! certificate a private CA signed (a self-hosted app, a proxy that inspects TLS)
//! is trusted through the configuration, and refused without it.
//!
//! The servers are the usual test servers (the sandbox, wiremock) behind a TLS
//! front whose certificate (`tests/fixtures/tls/server.pem`, for `localhost` and
//! 127.0.0.1) the test CA `tests/fixtures/tls/ca.pem` signed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seatwarden::config::Config;
use seatwarden::model::WorkspaceSnapshot;
use wiremock::MockServer;

fn tls_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn test_ca() -> PathBuf {
    tls_fixtures().join("ca.pem")
}

/// Terminates TLS on a free loopback port and passes every connection on to
/// `backend` in plain TCP. Returns the front's address.
async fn tls_front(backend: SocketAddr) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_file(tls_fixtures().join("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(tls_fixtures().join("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    front
}

/// Where `sandbox` listens (plain HTTP).
fn sandbox_address(sandbox: &seatwarden::sandbox::Sandbox) -> SocketAddr {
    let url = sandbox.base_url();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
        .parse()
        .unwrap()
}

fn load(dir: &Path, toml: &str) -> Result<Config, seatwarden::config::ConfigError> {
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default()))
}

/// Ada's configuration (see [`crate::fixtures::ada_config`]) for the workspace at
/// `url`, with `ca_line` in `[workspace]`.
fn ada_over(dir: &Path, url: &str, ca_line: &str) -> Config {
    crate::fixtures::ada_config(url, dir, "ACTIVE");
    let toml = std::fs::read_to_string(dir.join("seatwarden.toml")).unwrap();
    let toml = toml.replace(
        "token = \"t0ken\"\n",
        &format!("token = \"t0ken\"\n{ca_line}"),
    );
    load(dir, &toml).unwrap()
}

/// A workspace whose certificate the test CA signed: with `workspace.ca_file` a
/// reconcile goes through it and converges; without, the first request fails at
/// the handshake, once, with an error that says it was the certificate and where
/// to give the CA.
#[tokio::test]
async fn a_workspace_signed_by_a_private_ca_is_trusted_through_workspace_ca_file() {
    let sandbox = crate::fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let front = tls_front(sandbox_address(&sandbox)).await;
    let url = format!("https://localhost:{}/scim/v2", front.port());

    let dir = tempfile::tempdir().unwrap();
    let config = ada_over(
        dir.path(),
        &url,
        &format!("ca_file = \"{}\"\n", test_ca().display()),
    );
    assert!(
        config
            .files()
            .contains(&("workspace.ca_file", test_ca().as_path())),
        "check-config lists it: {:?}",
        config.files()
    );
    crate::fixtures::assert_converges(&config).await;
    let accounts = sandbox.snapshot().accounts;
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].user_name, "ada@example.com");

    // The same server, the system's roots: refused at the handshake.
    let dir = tempfile::tempdir().unwrap();
    let config = ada_over(dir.path(), &url, "");
    let requests = sandbox.stats().requests;
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let error = client.discover().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("TLS certificate refused"), "{text}");
    assert!(text.contains("`ca_file`"), "{text}");
    assert!(
        !seatwarden::retry::Transient::is_transient(&error),
        "{text}"
    );
    assert_eq!(sandbox.stats().requests, requests, "nothing reached it");
    sandbox.shutdown().await;
}

/// A `ca_file` that cannot be used is a configuration error naming the key and
/// the file, before anything is sent: a DER certificate (no PEM in it), a file
/// that is not there.
#[test]
fn a_workspace_ca_file_that_holds_no_pem_certificate_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("private-ca.cer");
    std::fs::write(&der, [0x30, 0x82, 0x01, 0x0a, 0x02, 0x82]).unwrap();
    let config = ada_over(
        dir.path(),
        "https://scim.example.com/scim/v2",
        "ca_file = \"private-ca.cer\"\n",
    );
    let error = config.scim_settings().unwrap_err().to_string();
    assert!(error.contains("workspace.ca_file"), "{error}");
    assert!(error.contains("private-ca.cer"), "{error}");
    assert!(error.contains("holds no PEM certificate"), "{error}");
    // check-config and the daemon's start read it as they read the token.
    let checked = config.check_credentials().unwrap_err().to_string();
    assert!(checked.contains("workspace.ca_file"), "{checked}");

    std::fs::remove_file(&der).unwrap();
    let error = config.scim_settings().unwrap_err().to_string();
    assert!(
        error.contains("workspace.ca_file") && error.contains("cannot read"),
        "{error}"
    );
}

/// A SCIM directory behind a private CA: read whole with `directory.ca_file`,
/// refused at the handshake without it; `check-config` checks the file.
#[tokio::test]
async fn a_scim_directory_signed_by_a_private_ca_is_read_through_directory_ca_file() {
    let idp = crate::fixtures::demo_sandbox("idp-token", Default::default()).await;
    let people = idp.snapshot().accounts.len();
    let front = tls_front(sandbox_address(&idp)).await;
    let scim = |ca_line: &str| {
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"https://127.0.0.1:{}/scim/v2\"\n\
             token = \"idp-token\"\n{ca_line}\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t0ken\"\n",
            front.port()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        &scim(&format!("ca_file = \"{}\"\n", test_ca().display())),
    )
    .unwrap();
    config.check_files().unwrap();
    let snapshot = config.directory().snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), people);

    let config = load(dir.path(), &scim("")).unwrap();
    let error = config.directory().snapshot().await.unwrap_err().to_string();
    assert!(error.contains("TLS certificate refused"), "{error}");

    std::fs::write(dir.path().join("not-a-ca.pem"), "no certificate here\n").unwrap();
    let config = load(dir.path(), &scim("ca_file = \"not-a-ca.pem\"\n")).unwrap();
    let error = config.check_files().unwrap_err().to_string();
    assert!(
        error.contains("directory.ca_file") && error.contains("not-a-ca.pem"),
        "{error}"
    );
    idp.shutdown().await;
}

/// Okta and Entra take `directory.ca_file` too (a proxy that inspects TLS signs
/// their certificates with its own CA): the handshake with the front passes, so
/// the error is the fake provider's answer (404: nothing is mounted), not the
/// certificate; without the file, it is the certificate.
#[tokio::test]
async fn okta_and_entra_trust_directory_ca_file() {
    let provider = MockServer::start().await;
    let front = tls_front(*provider.address()).await;
    let base = format!("https://localhost:{}", front.port());
    let okta = |ca_line: &str| {
        format!(
            "[directory]\nkind = \"okta\"\nurl = \"{base}\"\ntoken = \"ssws\"\n{ca_line}\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t0ken\"\n"
        )
    };
    let entra = |ca_line: &str| {
        format!(
            "[directory]\nkind = \"entra\"\ntenant_id = \"t1\"\nclient_id = \"c1\"\n\
             client_secret = \"s3cret\"\ngraph_url = \"{base}\"\nlogin_url = \"{base}\"\n\
             {ca_line}\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t0ken\"\n"
        )
    };
    let ca_line = format!("ca_file = \"{}\"\n", test_ca().display());
    let dir = tempfile::tempdir().unwrap();
    for (kind, toml) in [
        ("okta", &okta as &dyn Fn(&str) -> String),
        ("entra", &entra),
    ] {
        let trusted = load(dir.path(), &toml(&ca_line)).unwrap();
        let error = trusted
            .directory()
            .snapshot()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("certificate") && error.contains("404"),
            "{kind}: {error}"
        );
        let untrusted = load(dir.path(), &toml("")).unwrap();
        let error = untrusted
            .directory()
            .snapshot()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("TLS certificate refused"), "{kind}: {error}");
    }
    assert!(
        !provider.received_requests().await.unwrap().is_empty(),
        "the trusted clients reached the provider"
    );
}
