//! `quorum cert create-ca | create-node | create-client`: the certificates the cluster port
//! runs on, made in pure Rust (no openssl binary), in one directory (`--certs-dir`).
//!
//! Layout: `ca.crt`/`ca.key` (the cluster's CA), `node.crt`/`node.key` (a node's certificate,
//! used both to serve and to dial peers; subject CN `node`), `client.NAME.crt`/`.key` (an
//! operator's certificate; subject CN `client.NAME`). A node's identity is its public key, so
//! `create-node` keeps an existing `node.key`: a re-issued certificate (new names, new expiry,
//! new CA) keeps the node's identity in the membership.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::identity::{client_common_name, NODE_COMMON_NAME};

/// File names inside a certificates directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// The operator certificate name the CLI uses when `--client` is not given.
pub const DEFAULT_CLIENT: &str = "admin";

/// How long a CA is valid.
const CA_DAYS: i64 = 10 * 365;
/// How long a node or client certificate is valid unless `--days` says otherwise.
const LEAF_DAYS: i64 = 5 * 365;

/// The `quorum cert` subcommands.
// The variants are the command names users type (`create-ca`, ...), as CockroachDB's are.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make the cluster's CA: ca.crt and ca.key (refuses to overwrite an existing ca.key).
    CreateCa {
        #[command(flatten)]
        dir: CertsDir,
    },
    /// Make node.crt/node.key signed by the CA, valid for HOST... (DNS names or IPs), used
    /// both to serve the cluster port and to dial peers. An existing node.key is kept.
    CreateNode {
        #[command(flatten)]
        dir: CertsDir,
        #[command(flatten)]
        ca_key: CaKey,
        /// DNS names and IP addresses peers and operators reach this node by.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: i64,
    },
    /// Make client.NAME.crt/client.NAME.key for an operator (`admin` is the CLI's default).
    CreateClient {
        #[command(flatten)]
        dir: CertsDir,
        #[command(flatten)]
        ca_key: CaKey,
        /// The operator's name: letters, digits, `-` and `_`.
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: i64,
    },
}

/// Where the certificates are.
#[derive(Args, Debug)]
pub struct CertsDir {
    /// Directory holding ca.crt (and ca.key unless --ca-key says otherwise) and the
    /// certificates made from them.
    #[arg(long)]
    pub certs_dir: PathBuf,
}

/// Where the CA's key is, for commands that sign.
#[derive(Args, Debug)]
pub struct CaKey {
    /// The CA's private key [default: ca.key in --certs-dir]; keep it off the nodes.
    #[arg(long)]
    pub ca_key: Option<PathBuf>,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; remove it first to make a new CA (every node and client certificate must then be made again)")]
    CaExists { path: PathBuf },
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("client name `{0}` must be 1-64 letters, digits, `-` or `_`")]
    ClientName(String),
    #[error("`--days` must be between 1 and 36500, got {0}")]
    Days(i64),
}

/// Runs one `quorum cert` command; prints the files it wrote.
pub fn run(command: CertCommand) -> std::process::ExitCode {
    match execute(command) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("quorum: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(command: CertCommand) -> Result<Vec<PathBuf>, CertError> {
    match command {
        CertCommand::CreateCa { dir } => create_ca(&dir.certs_dir),
        CertCommand::CreateNode {
            dir,
            ca_key,
            hosts,
            days,
        } => create_node(&Signer::new(&dir.certs_dir, ca_key.ca_key), &hosts, days),
        CertCommand::CreateClient {
            dir,
            ca_key,
            name,
            days,
        } => create_client(&Signer::new(&dir.certs_dir, ca_key.ca_key), &name, days),
    }
}

/// Writes a new CA into `dir`.
pub fn create_ca(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(CertError::CaExists { path: key_path });
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("quorum CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    create_dir(dir)?;
    let cert_path = dir.join(CA_CERT);
    write_public(&cert_path, &cert.pem())?;
    write_secret(&key_path, &key.serialize_pem())?;
    Ok(vec![cert_path, key_path])
}

/// Where a signing command writes (`dir`, which holds `ca.crt`) and the CA key it signs with.
pub struct Signer {
    dir: PathBuf,
    ca_key: PathBuf,
}

impl Signer {
    /// Signs into `dir` with `ca_key`, or with `dir/ca.key` when none is given.
    pub fn new(dir: &Path, ca_key: Option<PathBuf>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ca_key: ca_key.unwrap_or_else(|| dir.join(CA_KEY)),
        }
    }
}

/// Writes `node.crt` (and `node.key` unless one exists) signed by the CA.
pub fn create_node(
    signer: &Signer,
    hosts: &[String],
    days: i64,
) -> Result<Vec<PathBuf>, CertError> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = name(NODE_COMMON_NAME);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf(signer, params, days, NODE_CERT, NODE_KEY)
}

/// Writes `client.NAME.crt`/`client.NAME.key` signed by the CA.
pub fn create_client(signer: &Signer, client: &str, days: i64) -> Result<Vec<PathBuf>, CertError> {
    let valid = !client.is_empty()
        && client.len() <= 64
        && client
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(CertError::ClientName(client.to_string()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&client_common_name(client));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf(
        signer,
        params,
        days,
        &client_file(client, "crt"),
        &client_file(client, "key"),
    )
}

/// `client.NAME.crt` or `client.NAME.key`.
pub fn client_file(client: &str, extension: &str) -> String {
    format!("client.{client}.{extension}")
}

/// Signs `params` with the CA and writes the certificate, keeping an existing key.
fn leaf(
    signer: &Signer,
    mut params: CertificateParams,
    days: i64,
    cert_file: &str,
    key_file: &str,
) -> Result<Vec<PathBuf>, CertError> {
    if !(1..=36_500).contains(&days) {
        return Err(CertError::Days(days));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    let dir = signer.dir.as_path();
    let ca_cert = read(&dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&signer.ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;
    let key_path = dir.join(key_file);
    let mut written = Vec::new();
    let key = if key_path.exists() {
        KeyPair::from_pem(&read(&key_path)?)?
    } else {
        let key = KeyPair::generate()?;
        write_secret(&key_path, &key.serialize_pem())?;
        written.push(key_path);
        key
    };
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = dir.join(cert_file);
    write_public(&cert_path, &cert.pem())?;
    written.insert(0, cert_path);
    Ok(written)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from an hour ago (clock skew between the machine that signs and the nodes) for
/// `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_public(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}
