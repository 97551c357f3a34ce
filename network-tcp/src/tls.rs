//! Mutual TLS with rustls (ring provider): both sides present a certificate signed by the cluster CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;
use crate::transport::BoxedIo;
use crate::TcpError;

/// What a node needs to dial and accept TLS connections.
#[derive(Clone)]
pub(crate) struct TlsContext {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    server_name: ServerName<'static>,
}

fn tls_error(what: &str, error: impl std::fmt::Display) -> TcpError {
    TcpError::Tls(format!("{what}: {error}"))
}

impl TlsContext {
    pub(crate) fn new(config: &TlsConfig) -> Result<Self, TcpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        let mut cas = 0;
        for cert in CertificateDer::pem_slice_iter(config.ca_cert_pem.as_bytes()) {
            let cert = cert.map_err(|e| tls_error("ca_cert_pem", e))?;
            roots.add(cert).map_err(|e| tls_error("ca_cert_pem", e))?;
            cas += 1;
        }
        if cas == 0 {
            return Err(tls_error("ca_cert_pem", "no certificate found"));
        }
        let roots = Arc::new(roots);

        let chain = CertificateDer::pem_slice_iter(config.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error("cert_chain_pem", e))?;
        if chain.is_empty() {
            return Err(tls_error("cert_chain_pem", "no certificate found"));
        }
        let key = PrivateKeyDer::from_pem_slice(config.private_key_pem.as_bytes())
            .map_err(|e| tls_error("private_key_pem", e))?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| tls_error("client verifier", e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("server config", e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_error("server certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("client config", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_error("client certificate", e))?;
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| tls_error("server_name", e))?;
        Ok(TlsContext {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            server_name,
        })
    }

    pub(crate) async fn connect(&self, stream: TcpStream) -> std::io::Result<BoxedIo> {
        let stream = self
            .connector
            .connect(self.server_name.clone(), stream)
            .await?;
        Ok(Box::new(stream))
    }

    pub(crate) async fn accept(&self, stream: TcpStream) -> std::io::Result<BoxedIo> {
        let stream = self.acceptor.accept(stream).await?;
        Ok(Box::new(stream))
    }
}
