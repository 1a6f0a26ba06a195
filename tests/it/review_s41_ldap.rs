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
