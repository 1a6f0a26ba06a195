//! Session 41's review of the LDAP connector as an Active Directory administrator
//! meets it: what the errors of a misconfigured connection tell them to check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryError, LdapSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The Active Directory fake's settings, pointed at `url`.
fn source_at(url: String) -> LdapSource {
    let mut settings = crate::ldap_ad::source(0).settings().clone();
    settings.url = url;
    LdapSource::new(settings)
}

/// A plain LDAP port that answers whatever it is sent (a TLS hello included) with
/// a Notice of Disconnection (RFC 4511 §4.4.1: an ExtendedResponse with message
/// id 0, protocolError), as a domain controller's port 389 does, then closes.
async fn plain_ldap_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut hello = [0u8; 512];
            let _ = stream.read(&mut hello).await;
            let name = b"1.3.6.1.4.1.1466.20036";
            let mut response = vec![0x0a, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00, 0x8a];
            response.push(name.len() as u8);
            response.extend_from_slice(name);
            let mut message = vec![0x02, 0x01, 0x00, 0x78, response.len() as u8];
            message.extend(response);
            let mut out = vec![0x30, message.len() as u8];
            out.extend(message);
            let _ = stream.write_all(&out).await;
        }
    });
    port
}

/// `ldaps://dc1:389`, the classic slip: the domain controller answers the TLS
/// hello in plain LDAP. The error said to set `directory.ca_file`, which cannot
/// help; it says the port does not speak TLS and which to use, and is final.
#[tokio::test]
async fn ldaps_to_a_plain_ldap_port_says_the_port_does_not_speak_tls() {
    let port = plain_ldap_port().await;
    let url = format!("ldaps://127.0.0.1:{port}");
    let error = source_at(url.clone()).snapshot().await.unwrap_err();
    let DirectoryError::Transport {
        endpoint,
        message,
        transient,
    } = &error
    else {
        panic!("expected a transport error, got {error:?}");
    };
    assert!(endpoint.starts_with(&url), "{endpoint}");
    assert!(!transient, "{error}");
    assert!(
        message.contains("the server on that port does not speak TLS"),
        "{message}"
    );
    assert!(message.contains("start_tls = true"), "{message}");
    assert!(!message.contains("ca_file"), "{message}");
}

/// An LDAPS port on 127.0.0.2 whose certificate (tests/fixtures/tls, signed by
/// its CA) names localhost and 127.0.0.1 only: a trusted certificate for another
/// name, as a domain controller's is when directory.url gives its IP address.
fn ldaps_port_on_another_address() -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::Read;
    use std::sync::Arc;
    let tls = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls"));
    let cert = CertificateDer::from_pem_file(tls.join("server.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(tls.join("server-key.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let _ = tls.read(&mut [0; 1]);
        }
    });
    port
}

/// `ldaps://10.0.0.5` with the CA trusted: the certificate names the domain
/// controller's DNS name, not the address. The error advised `directory.ca_file`,
/// already set; it says the certificate must name the host in the URL.
#[tokio::test]
async fn a_certificate_for_another_name_says_to_use_the_name_it_was_issued_for() {
    let port = ldaps_port_on_another_address();
    let url = format!("ldaps://127.0.0.2:{port}");
    let mut settings = source_at(url.clone()).settings().clone();
    settings.ca_file = Some(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tls/ca.pem"
        ))
        .to_owned(),
    );
    let error = LdapSource::new(settings).snapshot().await.unwrap_err();
    let DirectoryError::Transport {
        endpoint,
        message,
        transient,
    } = &error
    else {
        panic!("expected a transport error, got {error:?}");
    };
    assert!(endpoint.starts_with(&url), "{endpoint}");
    assert!(!transient, "{error}");
    assert!(message.starts_with("TLS certificate refused"), "{message}");
    assert!(
        message.contains("the certificate must name the host in directory.url"),
        "{message}"
    );
    assert!(!message.contains("ca_file"), "{message}");
}

/// `ldap://dc1:636` (with `start_tls` or without): the TLS port hangs up on the
/// first LDAP message, and the error said only "channel closed", after every
/// retry. It says the port may speak TLS and to write ldaps://.
#[tokio::test]
async fn ldap_to_a_tls_port_says_to_write_ldaps() {
    let (url, _) = crate::fixtures::untrusted_tls_server();
    let url = url.replace("https://", "ldap://");
    for start_tls in [false, true] {
        let mut settings = source_at(url.clone()).settings().clone();
        settings.start_tls = start_tls;
        let error = LdapSource::new(settings).snapshot().await.unwrap_err();
        let DirectoryError::Transport {
            endpoint, message, ..
        } = &error
        else {
            panic!("start_tls = {start_tls}: expected a transport error, got {error:?}");
        };
        assert!(endpoint.starts_with(&url), "{endpoint}");
        assert!(
            message.contains("the server hung up on the first LDAP message"),
            "start_tls = {start_tls}: {message}"
        );
        assert!(message.contains("write ldaps://"), "{message}");
    }
}
