//! TLS to NATS: a server that requires TLS and verifies client certificates, with a CA and
//! certificates made for the test by `openssl`.

use std::path::Path;
use std::process::Command;

use vigil_bus::testing::PrivateNats;
use vigil_bus::{Bus, BusConfig, TlsFiles};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vigil test CA",
        ],
    );
    // Extensions make v3 certificates, the only kind WebPKI verification accepts.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let path = |f: &str| dir.path().join(f);
    let config = path("nats-tls.conf");
    std::fs::write(
        &config,
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            path("server.pem").display(),
            path("server.key").display(),
            path("ca.pem").display()
        ),
    )
    .unwrap();
    let nats = PrivateNats::start_with_config(&config, &[]);
    let url = nats.url();

    let with_tls = |tls: TlsFiles| BusConfig {
        tls,
        ..BusConfig::new(url.clone())
    };
    let bus = Bus::connect(with_tls(TlsFiles {
        ca: Some(path("ca.pem")),
        cert: Some(path("client.pem")),
        key: Some(path("client.key")),
    }))
    .await
    .expect("TLS with a client certificate");
    bus.ensure_event_stream().await.expect("JetStream over TLS");

    let no_client_cert = Bus::connect(with_tls(TlsFiles {
        ca: Some(path("ca.pem")),
        ..TlsFiles::default()
    }))
    .await;
    assert!(
        no_client_cert.is_err(),
        "the server verifies client certificates"
    );

    let untrusted = Bus::connect(with_tls(TlsFiles::default())).await;
    assert!(
        untrusted.is_err(),
        "the server's CA is not in the system's trust store"
    );

    let missing = Bus::connect(with_tls(TlsFiles {
        ca: Some(path("nowhere.pem")),
        ..TlsFiles::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(missing.code(), "bus_config", "{missing}");
}
