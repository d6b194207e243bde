//! Checkpoints (C2SP tlog-checkpoint) as signed notes (C2SP signed-note),
//! and cosignatures (C2SP tlog-cosignature).
//!
//! A checkpoint is the note text
//!
//! ```text
//! <origin>\n<size in decimal>\n<base64 root hash>\n
//! ```
//!
//! signed with the office's log key as an Ed25519 note signature (type
//! 0x01; key name = origin; key id = first 4 bytes of
//! SHA-256(name || "\n" || 0x01 || public key)). The origin names the
//! office's log: `hotline/<office>/<8 hex digits of SHA-256(log key)>`.
//!
//! A peer that has checked a checkpoint appends a `cosignature/v1` line
//! made with *its* log key (type 0x04; key name = the cosigner's own
//! origin): the signature bytes are an 8-byte big-endian Unix time followed
//! by an Ed25519 signature over
//! `"cosignature/v1\ntime <time>\n" || checkpoint text`.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, NoteError, Signature, Signer, Verifier, VerifierList};
use tlog_tiles::Checkpoint;

use super::merkle::Hash;
use crate::identity::OfficeName;
use crate::wire::sha256;

const TYPE_ED25519: u8 = 0x01;
const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The origin line of `office`'s log.
pub fn origin(office: &OfficeName, log_key: &VerifyingKey) -> String {
    format!(
        "hotline/{office}/{}",
        hex::encode(&sha256(log_key.as_bytes())[..4])
    )
}

/// Why a checkpoint or cosignature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a well-formed signed note.
    #[error("not a signed note: {0}")]
    Note(String),
    /// The note text is not a checkpoint.
    #[error("note is not a tlog checkpoint")]
    Format,
    /// The checkpoint names another log.
    #[error("checkpoint is for {got:?}, expected {expected:?}")]
    Origin {
        /// In the note.
        got: String,
        /// Expected.
        expected: String,
    },
    /// No valid signature by the expected key.
    #[error("no valid signature by {0}")]
    Unsigned(String),
}

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// Log origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The whole signed note as received or issued.
    pub note: Vec<u8>,
}

fn key_id(name: &str, kind: u8, key: &VerifyingKey) -> u32 {
    let mut k = vec![kind];
    k.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &k)
}

/// Ed25519 note signer (type 0x01).
struct NoteSigner<'a> {
    name: &'a str,
    key: &'a SigningKey,
}

impl Signer for NoteSigner<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn key_id(&self) -> u32 {
        key_id(self.name, TYPE_ED25519, &self.key.verifying_key())
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// Ed25519 note verifier (type 0x01).
struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl Verifier for NoteVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        key_id(&self.name, TYPE_ED25519, &self.key)
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

fn cosigned_message(time: u64, text: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// cosignature/v1 signer (type 0x04).
struct CosignatureSigner<'a> {
    name: &'a str,
    key: &'a SigningKey,
    time: u64,
}

impl Signer for CosignatureSigner<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn key_id(&self) -> u32 {
        key_id(self.name, TYPE_COSIGNATURE_V1, &self.key.verifying_key())
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let sig = self.key.sign(&cosigned_message(self.time, msg));
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// cosignature/v1 verifier (type 0x04).
struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        key_id(&self.name, TYPE_COSIGNATURE_V1, &self.key)
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 72 {
            return false;
        }
        let Some((time, rest)) = sig.split_first_chunk::<8>() else {
            return false;
        };
        let time = u64::from_be_bytes(*time);
        let Ok(s) = ed25519_dalek::Signature::from_slice(rest) else {
            return false;
        };
        self.key
            .verify_strict(&cosigned_message(time, msg), &s)
            .is_ok()
    }
}

/// Issues a checkpoint for the tree (`size`, `root`) of the log `origin`.
// `origin` is ours (built by [`origin`]: a valid line and key name), so the
// note library's checks cannot fail here; no peer value reaches this.
#[allow(clippy::expect_used)]
pub fn sign(origin: &str, size: u64, root: Hash, key: &SigningKey) -> SignedCheckpoint {
    let cp = Checkpoint::new(origin, size, root, "").expect("origin is a valid line");
    let mut note = Note::new(&cp.to_bytes(), &[]).expect("checkpoint text is a valid note");
    note.add_sigs(&[&NoteSigner { name: origin, key }])
        .expect("origin is a valid key name");
    SignedCheckpoint {
        origin: origin.to_string(),
        size,
        root,
        note: note.to_bytes(),
    }
}

/// Checks a checkpoint note: well formed, for `origin`, signed by `key`.
/// Other signatures (cosignatures) are allowed and ignored.
pub fn open(
    note: &[u8],
    origin: &str,
    key: &VerifyingKey,
) -> Result<SignedCheckpoint, CheckpointError> {
    let n = Note::from_bytes(note).map_err(|e| CheckpointError::Note(e.to_string()))?;
    let cp = Checkpoint::from_bytes(n.text()).map_err(|_| CheckpointError::Format)?;
    if cp.origin() != origin {
        return Err(CheckpointError::Origin {
            got: cp.origin().to_string(),
            expected: origin.to_string(),
        });
    }
    let verifiers = VerifierList::new(vec![Box::new(NoteVerifier {
        name: origin.to_string(),
        key: *key,
    })]);
    n.verify(&verifiers)
        .map_err(|_| CheckpointError::Unsigned(origin.to_string()))?;
    Ok(SignedCheckpoint {
        origin: origin.to_string(),
        size: cp.size(),
        root: *cp.hash(),
        note: note.to_vec(),
    })
}

/// Reads size and root from a checkpoint note without checking signatures
/// (for the log's own recovery bookkeeping).
pub fn peek(note: &[u8]) -> Option<(String, u64, Hash)> {
    let n = Note::from_bytes(note).ok()?;
    let cp = Checkpoint::from_bytes(n.text()).ok()?;
    Some((cp.origin().to_string(), cp.size(), *cp.hash()))
}

/// Adds a cosignature by `cosigner` (its own origin) with `key` at `time`
/// to a checkpoint note; returns the note with the cosignature appended.
pub fn cosign(
    note: &[u8],
    cosigner: &str,
    key: &SigningKey,
    time: u64,
) -> Result<Vec<u8>, CheckpointError> {
    let mut n = Note::from_bytes(note).map_err(|e| CheckpointError::Note(e.to_string()))?;
    n.add_sigs(&[&CosignatureSigner {
        name: cosigner,
        key,
        time,
    }])
    .map_err(|e| CheckpointError::Note(e.to_string()))?;
    Ok(n.to_bytes())
}

/// Finds and checks `cosigner`'s cosignature on a checkpoint note; returns
/// its time.
pub fn verify_cosignature(
    note: &[u8],
    cosigner: &str,
    key: &VerifyingKey,
) -> Result<u64, CheckpointError> {
    let n = Note::from_bytes(note).map_err(|e| CheckpointError::Note(e.to_string()))?;
    let verifiers = VerifierList::new(vec![Box::new(CosignatureVerifier {
        name: cosigner.to_string(),
        key: *key,
    })]);
    let (ok, _) = n.verify(&verifiers).map_err(|e| match e {
        NoteError::UnverifiedNote => CheckpointError::Unsigned(cosigner.to_string()),
        other => CheckpointError::Note(other.to_string()),
    })?;
    let sig: &Signature = ok
        .first()
        .ok_or_else(|| CheckpointError::Unsigned(cosigner.to_string()))?;
    let time = sig
        .signature()
        .first_chunk::<8>()
        .ok_or_else(|| CheckpointError::Unsigned(cosigner.to_string()))?;
    Ok(u64::from_be_bytes(*time))
}

/// The cosigner names (key names) on a note, for display.
pub fn signers(note: &[u8]) -> Vec<String> {
    Note::from_bytes(note)
        .map(|n| {
            String::from_utf8_lossy(&n.to_bytes())
                .lines()
                .filter_map(|l| l.strip_prefix("— "))
                .filter_map(|l| l.split_once(' ').map(|(name, _)| name.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::Tree;

    #[test]
    fn checkpoint_note_has_the_c2sp_shape_and_verifies() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let office = OfficeName::new("washington").unwrap();
        let o = origin(&office, &key.verifying_key());
        assert!(o.starts_with("hotline/washington/") && o.len() == "hotline/washington/".len() + 8);
        let mut t = Tree::new();
        t.push(b"a");
        t.push(b"b");
        let cp = sign(&o, 2, t.root(), &key);
        let text = String::from_utf8(cp.note.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], o);
        assert_eq!(lines[1], "2");
        assert_eq!(lines[2].len(), 44); // base64 of 32 bytes
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with(&format!("— {o} ")));
        let got = open(&cp.note, &o, &key.verifying_key()).unwrap();
        assert_eq!((got.size, got.root), (2, t.root()));
        // Wrong key, wrong origin, edited size.
        let other = SigningKey::from_bytes(&[4; 32]);
        assert!(open(&cp.note, &o, &other.verifying_key()).is_err());
        assert!(matches!(
            open(&cp.note, "hotline/x/00000000", &key.verifying_key()),
            Err(CheckpointError::Origin { .. })
        ));
        let edited = text.replacen("\n2\n", "\n3\n", 1);
        assert!(open(edited.as_bytes(), &o, &key.verifying_key()).is_err());
    }

    #[test]
    fn cosignature_round_trip_and_binding() {
        let wash = SigningKey::from_bytes(&[3; 32]);
        let pyong = SigningKey::from_bytes(&[5; 32]);
        let wo = origin(
            &OfficeName::new("washington").unwrap(),
            &wash.verifying_key(),
        );
        let po = origin(
            &OfficeName::new("pyongyang").unwrap(),
            &pyong.verifying_key(),
        );
        let cp = sign(&wo, 7, Tree::new().root(), &wash);
        let cosigned = cosign(&cp.note, &po, &pyong, 1_720_000_000).unwrap();
        // Still a valid checkpoint by washington, now with pyongyang's cosignature.
        assert_eq!(open(&cosigned, &wo, &wash.verifying_key()).unwrap().size, 7);
        assert_eq!(
            verify_cosignature(&cosigned, &po, &pyong.verifying_key()).unwrap(),
            1_720_000_000
        );
        assert_eq!(signers(&cosigned), vec![wo.clone(), po.clone()]);
        // A cosignature is not a checkpoint signature and vice versa.
        assert!(verify_cosignature(&cp.note, &po, &pyong.verifying_key()).is_err());
        assert!(open(&cosigned, &po, &pyong.verifying_key()).is_err());
        // Moving the cosignature onto another checkpoint fails.
        let other = sign(&wo, 8, Tree::new().root(), &wash);
        let sig_line = String::from_utf8(cosigned.clone())
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let forged = format!("{}{}\n", String::from_utf8(other.note).unwrap(), sig_line);
        assert!(verify_cosignature(forged.as_bytes(), &po, &pyong.verifying_key()).is_err());
    }
}
