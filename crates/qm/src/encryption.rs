//! age encryption of state documents: `qm export --encrypt-to` seals the exported JSON to one or
//! more X25519 recipients (`age1...`) as an ASCII-armored age file; `qm import --identity`
//! opens one (armored or binary) with the keys of an identity file as `age-keygen` writes it.
//! Bad input is a usage error (exit 2) naming the flag.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;

use age::x25519;

use crate::client::Failure;

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

/// The recipients of `--encrypt-to`, each an X25519 `age1...` public key.
pub(crate) fn recipients(list: &[String]) -> Result<Vec<x25519::Recipient>, Failure> {
    list.iter()
        .map(|text| {
            text.trim().parse::<x25519::Recipient>().map_err(|e| {
                usage(format!(
                    "--encrypt-to {text:?} is not an age X25519 recipient (age1...): {e}"
                ))
            })
        })
        .collect()
}

/// `doc` encrypted to every recipient, ASCII-armored.
pub(crate) fn encrypt(doc: &[u8], to: &[x25519::Recipient]) -> Result<Vec<u8>, Failure> {
    let failed = |e: &dyn std::fmt::Display| Failure {
        code: 1,
        message: format!("cannot encrypt the state: {e}"),
    };
    let encryptor = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| failed(&e))?;
    let armor = age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)
        .map_err(|e| failed(&e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| failed(&e))?;
    writer.write_all(doc).map_err(|e| failed(&e))?;
    writer
        .finish()
        .and_then(age::armor::ArmoredWriter::finish)
        .map_err(|e| failed(&e))
}

/// Whether `bytes` is an age file, binary or armored.
pub(crate) fn is_encrypted(bytes: &[u8]) -> bool {
    let start = bytes.trim_ascii_start();
    start.starts_with(b"age-encryption.org/")
        || start.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// The text of the state file `file`: decrypted with the keys in `identity` when it is an age
/// file, as it is otherwise (a plain export imports with or without `--identity`).
pub(crate) fn open(
    bytes: Vec<u8>,
    file: &Path,
    identity: Option<&Path>,
) -> Result<String, Failure> {
    let plain = if is_encrypted(&bytes) {
        let Some(identity) = identity else {
            return Err(usage(format!(
                "{} is age-encrypted: pass --identity FILE with the key it was encrypted to",
                file.display()
            )));
        };
        decrypt(&bytes, file, identity)?
    } else {
        bytes
    };
    String::from_utf8(plain).map_err(|_| usage(format!("{} is not UTF-8 text", file.display())))
}

/// The identities of an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments).
fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>, Failure> {
    let bad = |reason: String| usage(format!("--identity {}: {reason}", path.display()));
    let text = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let reader = std::io::BufReader::new(text);
    // Trimmed first: age's parser refuses a key followed by spaces or a CRLF line end.
    let mut cleaned = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| bad(format!("cannot read it: {e}")))?;
        cleaned.extend_from_slice(line.trim().as_bytes());
        cleaned.push(b'\n');
    }
    let keys = age::IdentityFile::from_buffer(&cleaned[..])
        .and_then(|f| f.into_identities().map_err(std::io::Error::other))
        .map_err(|e| bad(e.to_string()))?;
    if keys.is_empty() {
        return Err(bad("no AGE-SECRET-KEY-1... line in it".to_owned()));
    }
    Ok(keys)
}

fn decrypt(bytes: &[u8], file: &Path, identity: &Path) -> Result<Vec<u8>, Failure> {
    let keys = identities(identity)?;
    let broken = |e: &dyn std::fmt::Display| {
        usage(format!(
            "{} is not a readable age file: {e}",
            file.display()
        ))
    };
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(bytes))
        .map_err(|e| broken(&e))?;
    let mut reader = decryptor
        .decrypt(keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => usage(format!(
                "--identity {}: none of its keys can decrypt {}",
                identity.display(),
                file.display()
            )),
            other => broken(&other),
        })?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).map_err(|e| broken(&e))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_through_armored_age() {
        let key = x25519::Identity::generate();
        let to = recipients(&[key.to_public().to_string()]).unwrap();
        let sealed = encrypt(b"{\"nodes\":[]}", &to).unwrap();
        assert!(sealed.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(is_encrypted(&sealed));
        let dir = std::env::temp_dir().join(format!("qm-encryption-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = dir.join("key.txt");
        use age::secrecy::ExposeSecret as _;
        std::fs::write(
            &id,
            format!("# a comment\n{}\n", key.to_string().expose_secret()),
        )
        .unwrap();
        let file = Path::new("state.age");
        assert_eq!(
            open(sealed.clone(), file, Some(&id)).unwrap(),
            "{\"nodes\":[]}"
        );
        let err = open(sealed.clone(), file, None).unwrap_err();
        assert!(err.message.contains("--identity"), "{}", err.message);
        let other = dir.join("other.txt");
        let stranger = x25519::Identity::generate();
        std::fs::write(&other, stranger.to_string().expose_secret()).unwrap();
        let err = open(sealed, file, Some(&other)).unwrap_err();
        assert!(err.message.contains("none of its keys"), "{}", err.message);
        assert_eq!(open(b"{}".to_vec(), file, Some(&id)).unwrap(), "{}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_recipient_names_the_flag() {
        let err = recipients(&["age1nope".to_owned()]).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message.starts_with("--encrypt-to \"age1nope\""),
            "{}",
            err.message
        );
    }
}
