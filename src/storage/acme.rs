//! ACME state (RFC 8555): the account key per CA, the certificate in use
//! with its key, and how renewal is going. Knows nothing of the protocol.

use rusqlite::{OptionalExtension, params};

use super::{Storage, now_ms};
use crate::error::Result;

/// Migration 22: the ACME account per CA directory URL (a P-256 key as
/// PKCS#8, and the account URL once registered); the one certificate
/// obtained (chain and key as PEM, the names it covers, comma-separated,
/// its serial and validity in Unix seconds); and the renewal's failures in a
/// row, the last error and when the next attempt is due.
pub(super) const ACME: &str = r#"
    CREATE TABLE acme_accounts (
        directory    TEXT PRIMARY KEY,
        private_key  BLOB NOT NULL,
        url          TEXT,
        created_ts   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE acme_certificate (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        domains      TEXT NOT NULL,
        chain_pem    BLOB NOT NULL,
        key_pem      BLOB NOT NULL,
        serial       TEXT NOT NULL,
        not_before   INTEGER NOT NULL,
        not_after    INTEGER NOT NULL,
        issued_ts    INTEGER NOT NULL
    );
    CREATE TABLE acme_renewal (
        id               INTEGER PRIMARY KEY CHECK (id = 1),
        failures         INTEGER NOT NULL,
        last_error       TEXT,
        next_attempt_ts  INTEGER NOT NULL
    );
"#;

/// A certificate obtained through ACME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeCertificate {
    /// The names it covers, as ordered.
    pub domains: Vec<String>,
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Hex, for the log.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// How renewal is going: failures in a row, the last error, and when (Unix
/// milliseconds) the next attempt is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeRenewal {
    pub failures: u32,
    pub last_error: Option<String>,
    pub next_attempt_ts: i64,
}

impl Storage {
    /// The account key (PKCS#8) and URL for the CA at `directory`, if stored.
    pub fn acme_account(&self, directory: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let mut statement =
            self.conn.prepare_cached("SELECT private_key, url FROM acme_accounts WHERE directory = ?1")?;
        Ok(statement.query_row([directory], |row| Ok((row.get(0)?, row.get(1)?))).optional()?)
    }

    /// The account key (PKCS#8) and URL for the CA at `directory`, storing
    /// `new_key` first if there is none.
    pub fn acme_account_or_insert(
        &self,
        directory: &str,
        new_key: &[u8],
    ) -> Result<(Vec<u8>, Option<String>)> {
        self.conn.execute(
            "INSERT OR IGNORE INTO acme_accounts (directory, private_key, created_ts) VALUES (?1, ?2, ?3)",
            params![directory, new_key, now_ms()],
        )?;
        let mut statement =
            self.conn.prepare_cached("SELECT private_key, url FROM acme_accounts WHERE directory = ?1")?;
        Ok(statement.query_row([directory], |row| Ok((row.get(0)?, row.get(1)?)))?)
    }

    /// Records the account URL the CA gave.
    pub fn set_acme_account_url(&self, directory: &str, url: &str) -> Result<()> {
        self.conn
            .execute("UPDATE acme_accounts SET url = ?2 WHERE directory = ?1", params![directory, url])?;
        Ok(())
    }

    /// The certificate obtained last, if any.
    pub fn acme_certificate(&self) -> Result<Option<AcmeCertificate>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT domains, chain_pem, key_pem, serial, not_before, not_after FROM acme_certificate WHERE id = 1",
        )?;
        Ok(statement
            .query_row([], |row| {
                let domains: String = row.get(0)?;
                Ok(AcmeCertificate {
                    domains: domains.split(',').filter(|name| !name.is_empty()).map(str::to_string).collect(),
                    chain_pem: row.get(1)?,
                    key_pem: row.get(2)?,
                    serial: row.get(3)?,
                    not_before: row.get(4)?,
                    not_after: row.get(5)?,
                })
            })
            .optional()?)
    }

    /// Replaces the certificate with a new one, and clears the failures.
    pub fn store_acme_certificate(&self, certificate: &AcmeCertificate) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO acme_certificate
                 (id, domains, chain_pem, key_pem, serial, not_before, not_after, issued_ts)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                certificate.domains.join(","),
                certificate.chain_pem,
                certificate.key_pem,
                certificate.serial,
                certificate.not_before,
                certificate.not_after,
                now_ms()
            ],
        )?;
        self.conn.execute("DELETE FROM acme_renewal", [])?;
        Ok(())
    }

    /// Records a failed attempt and when the next is due; answers the
    /// failures in a row, this one included.
    pub fn record_acme_failure(&self, error: &str, next_attempt_ts: i64) -> Result<u32> {
        self.conn.execute(
            "INSERT INTO acme_renewal (id, failures, last_error, next_attempt_ts) VALUES (1, 1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET failures = failures + 1, last_error = ?1, next_attempt_ts = ?2",
            params![error, next_attempt_ts],
        )?;
        Ok(self.acme_renewal()?.map_or(1, |renewal| renewal.failures))
    }

    /// How renewal is going, if an attempt failed since the last success.
    pub fn acme_renewal(&self) -> Result<Option<AcmeRenewal>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT failures, last_error, next_attempt_ts FROM acme_renewal WHERE id = 1")?;
        Ok(statement
            .query_row([], |row| {
                Ok(AcmeRenewal {
                    failures: row.get(0)?,
                    last_error: row.get(1)?,
                    next_attempt_ts: row.get(2)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::AcmeCertificate;

    #[test]
    fn account_certificate_and_failures_round_trip() {
        let storage = crate::storage::in_memory();
        let (key, url) = storage.acme_account_or_insert("https://ca.test/dir", b"first").unwrap();
        assert_eq!((key.as_slice(), url), (b"first".as_slice(), None));
        storage.set_acme_account_url("https://ca.test/dir", "https://ca.test/acct/1").unwrap();
        let (key, url) = storage.acme_account_or_insert("https://ca.test/dir", b"second").unwrap();
        assert_eq!((key.as_slice(), url.as_deref()), (b"first".as_slice(), Some("https://ca.test/acct/1")));

        assert_eq!(storage.acme_account("https://other.test/dir").unwrap(), None);
        assert_eq!(storage.acme_certificate().unwrap(), None);
        assert_eq!(storage.record_acme_failure("CA down", 10).unwrap(), 1);
        assert_eq!(storage.record_acme_failure("CA still down", 20).unwrap(), 2);
        let renewal = storage.acme_renewal().unwrap().unwrap();
        assert_eq!((renewal.last_error.as_deref(), renewal.next_attempt_ts), (Some("CA still down"), 20));
        let certificate = AcmeCertificate {
            domains: vec!["a.example".into(), "b.example".into()],
            chain_pem: b"chain".to_vec(),
            key_pem: b"key".to_vec(),
            serial: "01ab".into(),
            not_before: 100,
            not_after: 190,
        };
        storage.store_acme_certificate(&certificate).unwrap();
        assert_eq!(storage.acme_certificate().unwrap(), Some(certificate));
        assert_eq!(storage.acme_renewal().unwrap(), None);
    }
}
