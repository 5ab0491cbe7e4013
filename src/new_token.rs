//! `otp2mqtt token`: a fresh random secret, shown as text, as an otpauth URI, as
//! a QR code to scan off the terminal and as a config snippet, so nobody needs
//! `pip install pyotp` to set up a sensor.

use std::process::ExitCode;

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use zeroize::Zeroizing;

use crate::cli::TokenArgs;
use crate::config::{DEFAULT_DIGITS, DEFAULT_PERIOD, slug};
use crate::otpauth::OtpauthUri;
use crate::secret::SecretString;
use crate::sensor::Algorithm;

/// 160 bits: RFC 4226's recommended size and `pyotp.random_base32()`'s, which
/// is 32 base32 characters with no padding.
pub const SECRET_BYTES: usize = 20;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--{option} {reason}")]
    Option {
        option: &'static str,
        reason: String,
    },
    #[error("the operating system's secure random source failed: {0}")]
    Random(getrandom::Error),
    #[error("the otpauth URI does not fit in a QR code ({0}): use a shorter --name or --issuer")]
    QrCode(qrcode::types::QrError),
}

/// Runs `otp2mqtt token`: prints everything to stdout.
pub fn run(args: &TokenArgs) -> ExitCode {
    let output = random_secret().and_then(|secret| {
        let token = new_token(args, secret)?;
        render(&token, args.invert)
    });
    match output {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("otp2mqtt: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A new 160-bit secret from the operating system's CSPRNG, in base32.
pub fn random_secret() -> Result<SecretString, TokenError> {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    getrandom::fill(bytes.as_mut_slice()).map_err(TokenError::Random)?;
    Ok(encode_base32(bytes.as_slice()))
}

/// RFC 4648 base32 without padding, the form authenticator apps and the config take.
pub fn encode_base32(bytes: &[u8]) -> SecretString {
    let secret = totp_rs::Secret::from(bytes.to_vec());
    SecretString::new(secret.to_base32())
}

/// Checks the options and puts the token together.
pub fn new_token(args: &TokenArgs, secret: SecretString) -> Result<OtpauthUri, TokenError> {
    let name = args.name.trim();
    let issuer = args.issuer.trim();
    check_text("name", name)?;
    check_text("issuer", issuer)?;
    if slug(name).is_empty() {
        return Err(TokenError::Option {
            option: "name",
            reason:
                "needs at least one letter or digit (Home Assistant derives the entity id from it)"
                    .into(),
        });
    }
    Ok(OtpauthUri {
        issuer: Some(issuer.to_string()),
        account: name.to_string(),
        secret,
        digits: args.digits,
        period: args.period,
        algorithm: args.algorithm,
    })
}

fn check_text(option: &'static str, text: &str) -> Result<(), TokenError> {
    if text.is_empty() {
        return Err(TokenError::Option {
            option,
            reason: "is empty".into(),
        });
    }
    if text.chars().any(char::is_control) {
        return Err(TokenError::Option {
            option,
            reason: "contains a control character (a line break or tab)".into(),
        });
    }
    Ok(())
}

/// Everything `token` prints, in order: the secret, the URI, the QR code, the
/// config snippet and what to do next.
pub fn render(token: &OtpauthUri, invert_qr: bool) -> Result<String, TokenError> {
    let uri = token.to_uri();
    let qr = qr_code(&uri, invert_qr)?;
    Ok(format!(
        "New TOTP secret (160 bits from the operating system's secure random source).\n\
         Keep it private: anyone who has it can make these codes.\n\
         \n\
         Secret, for typing into the authenticator app (time-based, {algorithm}, {digits} digits, {period} s):\n\
         \n    {secret}\n\
         \n\
         otpauth URI, for apps and password managers that import a link:\n\
         \n    {uri}\n\
         \n\
         Scan this QR code with the authenticator app:\n\
         \n{qr}\n\
         \n\
         Config snippet: add the entry under `sensors:` in the config file:\n\
         \n{snippet}\n\
         Then run `otp2mqtt check --config FILE` and `otp2mqtt code --config FILE`,\n\
         and compare the code with the app's.\n",
        algorithm = token.algorithm,
        digits = token.digits,
        period = token.period,
        secret = token.secret.expose(),
        snippet = config_snippet(token),
    ))
}

/// The URI as a QR code of Unicode half blocks, two modules per character cell,
/// with the standard 4-module quiet zone. By default the *light* modules are
/// drawn (as `qrencode -t UTF8` does), which reads right on the usual dark
/// terminal background; `invert` draws the dark ones, for light backgrounds.
pub fn qr_code(uri: &str, invert: bool) -> Result<String, TokenError> {
    // Level M survives a glare spot or a moiré pattern on a screen at a small
    // cost in size (version 6, 49 columns with the quiet zone, for a typical URI).
    let code = QrCode::with_error_correction_level(uri, EcLevel::M).map_err(TokenError::QrCode)?;
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(code
        .render::<Dense1x2>()
        .dark_color(dark)
        .light_color(light)
        .quiet_zone(true)
        .build())
}

/// A `sensors:` list entry for this token. Optional keys appear only when they
/// differ from the defaults, so the snippet stays as short as the config allows.
pub fn config_snippet(token: &OtpauthUri) -> String {
    let mut snippet = format!(
        "sensors:\n  - name: {}\n    token: {}\n",
        yaml_quoted(&token.account),
        token.secret.expose()
    );
    if token.digits != DEFAULT_DIGITS {
        snippet.push_str(&format!("    digits: {}\n", token.digits));
    }
    if token.period != DEFAULT_PERIOD {
        snippet.push_str(&format!("    period: {}\n", token.period));
    }
    if token.algorithm != Algorithm::Sha1 {
        snippet.push_str(&format!("    algorithm: {}\n", token.algorithm));
    }
    snippet
}

/// A YAML double-quoted scalar. Control characters were refused earlier, so
/// only the backslash and the quote need escaping.
fn yaml_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_with_environment;
    use crate::secret::decode_base32_secret;

    fn args(name: &str) -> TokenArgs {
        TokenArgs {
            name: name.into(),
            issuer: "Home Assistant".into(),
            digits: 6,
            period: 30,
            algorithm: Algorithm::Sha1,
            invert: false,
        }
    }

    #[test]
    fn secrets_are_160_bits_of_base32_and_differ_every_time() {
        let first = random_secret().unwrap();
        let second = random_secret().unwrap();
        for secret in [&first, &second] {
            assert_eq!(secret.expose().len(), 32);
            assert_eq!(decode_base32_secret(secret.expose()).unwrap().len(), 20);
        }
        assert_ne!(first, second);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(encode_base32(b"foobar").expose(), "MZXW6YTBOI");
        assert_eq!(
            encode_base32(b"12345678901234567890").expose(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn refuses_names_home_assistant_cannot_use() {
        let secret = || SecretString::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        for (name, reason) in [
            ("  ", "is empty"),
            ("!!!", "letter or digit"),
            ("a\nb", "control"),
        ] {
            let message = new_token(&args(name), secret()).unwrap_err().to_string();
            assert!(message.starts_with("--name"), "{message}");
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn snippet_loads_as_a_config_with_the_same_settings() {
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let mut options = args("Door \"No. 1\" \\ back");
        options.digits = 8;
        options.period = 60;
        options.algorithm = Algorithm::Sha256;
        let token = new_token(&options, SecretString::new(secret)).unwrap();
        let snippet = config_snippet(&token);
        assert!(snippet.contains("digits: 8") && snippet.contains("algorithm: SHA256"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otp2mqtt.yaml");
        std::fs::write(&path, &snippet).unwrap();
        let settings = load_with_environment(&path, Some(Default::default())).unwrap();
        let sensor = &settings.sensors[0];
        assert_eq!(sensor.name, "Door \"No. 1\" \\ back");
        assert_eq!((sensor.digits, sensor.period), (8, 60));
        assert_eq!(sensor.algorithm, Algorithm::Sha256);
        assert_eq!(sensor.secret_bits, 160);

        let defaults = new_token(&args("OTP Sensor"), SecretString::new(secret)).unwrap();
        assert_eq!(
            config_snippet(&defaults),
            format!("sensors:\n  - name: \"OTP Sensor\"\n    token: {secret}\n")
        );
    }

    #[test]
    fn output_has_every_form_of_the_secret() {
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let token = new_token(&args("Front Door"), SecretString::new(secret)).unwrap();
        let text = render(&token, false).unwrap();
        assert!(text.contains(&format!("\n    {secret}\n")), "{text}");
        assert!(text.contains(&format!(
            "\n    otpauth://totp/Home%20Assistant:Front%20Door?secret={secret}&issuer=Home%20Assistant&algorithm=SHA1&digits=6&period=30\n"
        )));
        assert!(text.contains('\u{2588}'), "QR code drawn with blocks");
        assert!(text.contains(&format!("    token: {secret}\n")));
    }

    #[test]
    fn qr_code_has_a_quiet_zone_and_inverts() {
        let normal = qr_code("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQ", false).unwrap();
        let inverted = qr_code("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQ", true).unwrap();
        // Dark-background mode draws the quiet zone (light) as full blocks.
        assert!(
            normal
                .lines()
                .next()
                .unwrap()
                .chars()
                .all(|c| c == '\u{2588}')
        );
        assert!(inverted.lines().next().unwrap().chars().all(|c| c == ' '));
        assert_eq!(normal.lines().count(), inverted.lines().count());
    }
}
