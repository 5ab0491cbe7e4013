//! A validated OTP sensor: what Home Assistant's `otp` platform holds, plus the
//! knobs (digits, period, algorithm) other authenticators use.

use std::fmt;
use std::str::FromStr;

use totp_rs::Totp;

use crate::schedule::{Step, UnixTime};
use crate::verify::VerifyPolicy;

/// The HMAC behind the code (RFC 6238 section 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The spelling otpauth URIs and Home Assistant attributes use.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    /// Accepts `SHA1`, `sha1`, `SHA-1` and the like: people copy these from
    /// otpauth URIs and vendor docs in every spelling.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let folded: String = text
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_uppercase();
        match folded.as_str() {
            "SHA1" => Ok(Algorithm::Sha1),
            "SHA256" => Ok(Algorithm::Sha256),
            "SHA512" => Ok(Algorithm::Sha512),
            _ => Err(format!(
                "unknown algorithm '{text}': use SHA1, SHA256 or SHA512"
            )),
        }
    }
}

/// One configured OTP sensor, ready to produce codes. Built only by the config
/// loader, after every rule has been checked, so nothing here can fail.
pub struct Sensor {
    /// Stable id, `[a-zA-Z0-9_-]+`: part of topics and of Home Assistant's unique_id.
    pub id: String,
    /// Shown in Home Assistant as the device name; the entity id derives from it.
    pub name: String,
    pub digits: u8,
    /// Step length in seconds (RFC 6238 `X`).
    pub period: u64,
    pub algorithm: Algorithm,
    /// Decoded secret size, kept for warnings and `check` (never the secret itself).
    pub secret_bits: usize,
    /// Set when codes typed on a keypad are checked against this sensor.
    pub verify: Option<VerifyPolicy>,
    totp: Totp,
}

impl Sensor {
    /// `secret` must already be decoded and checked (see `secret::decode_base32_secret`);
    /// `digits` in 6..=8 and `period` > 0 (the config loader guarantees both).
    pub fn new(
        id: String,
        name: String,
        secret: &[u8],
        digits: u8,
        period: u64,
        algorithm: Algorithm,
    ) -> Self {
        // `build()` refuses secrets under 128 bits, but Home Assistant's own
        // example secret is 80 bits and must work: the loader enforced the 80-bit
        // floor, digits 6..=8 and a non-zero period, which is all
        // `build_noncompliant` leaves to us.
        let totp = totp_rs::Builder::new()
            .with_algorithm(algorithm.to_totp_rs())
            .with_digits(digits)
            .with_step_duration(period)
            .with_secret(secret.to_vec())
            .build_noncompliant();
        Sensor {
            id,
            name,
            digits,
            period,
            algorithm,
            secret_bits: secret.len() * 8,
            verify: None,
            totp,
        }
    }

    /// The code valid at `time`, as a string that keeps its leading zeros.
    pub fn code_at(&self, time: UnixTime) -> String {
        self.totp.generate(time.whole_seconds()).to_string()
    }

    /// The code of a given step (used by verification and tests).
    pub fn code_for_step(&self, step: Step) -> String {
        self.totp
            .generate(step.0.saturating_mul(self.period))
            .to_string()
    }
}

impl fmt::Debug for Sensor {
    // Hand-written: the secret must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sensor")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("algorithm", &self.algorithm)
            .field("secret_bits", &self.secret_bits)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::decode_base32_secret;

    #[derive(serde::Deserialize)]
    struct Vectors {
        totp: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        time: u64,
        algorithm: String,
        digits: u8,
        period: u64,
        secret_base32: String,
        code: String,
    }

    #[test]
    fn rfc6238_appendix_b_vectors() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../tests/data/rfc6238.json")).unwrap();
        assert_eq!(vectors.totp.len(), 18);
        for vector in vectors.totp {
            let secret = decode_base32_secret(&vector.secret_base32).unwrap();
            let sensor = Sensor::new(
                "rfc".into(),
                "RFC".into(),
                &secret,
                vector.digits,
                vector.period,
                vector.algorithm.parse().unwrap(),
            );
            assert_eq!(
                sensor.code_at(UnixTime::from_secs(vector.time)),
                vector.code,
                "{} at {}",
                vector.algorithm,
                vector.time
            );
        }
    }

    #[test]
    fn home_assistant_80_bit_example_works_and_keeps_leading_zeros() {
        let secret = decode_base32_secret("IHEDPEBEVA2WVHB7").unwrap();
        let sensor = Sensor::new("s".into(), "S".into(), &secret, 6, 30, Algorithm::Sha1);
        assert_eq!(sensor.secret_bits, 80);
        for step in 0..2000u64 {
            let code = sensor.code_for_step(Step(step));
            assert_eq!(code.len(), 6);
            assert_eq!(code, sensor.code_at(UnixTime::from_secs(step * 30 + 29)));
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = decode_base32_secret("JBSWY3DPEHPK3PXP").unwrap();
        let sensor = Sensor::new("s".into(), "S".into(), &secret, 6, 30, Algorithm::Sha1);
        let debug = format!("{sensor:?}");
        assert!(
            !debug.contains("JBSW") && !debug.contains("48656c6c"),
            "{debug}"
        );
    }

    #[test]
    fn algorithm_spellings() {
        assert_eq!("sha-256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!("SHA512".parse::<Algorithm>(), Ok(Algorithm::Sha512));
        assert!("MD5".parse::<Algorithm>().is_err());
    }
}
