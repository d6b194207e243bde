//! The RFC 6962 Merkle tree over the log.
//!
//! A leaf is the exact stored bytes of one log entry. Leaf hash
//! `SHA-256(0x00 || entry)`, node hash `SHA-256(0x01 || left || right)`, the
//! empty tree `SHA-256("")`. Hashing and proofs come from `tlog_tiles` (the
//! Go sumdb `tlog` algorithms, which follow RFC 6962 exactly); this module
//! only decides where the hashes live:
//!
//! - [`Tree`] keeps every stored hash (about two per entry): in memory, or
//!   in a file with only its right edge and the newest hashes in memory
//!   ([`Tree::with_file`], what the node uses, so its memory does not grow
//!   with the log). It answers roots at any size, inclusion and
//!   consistency proofs.
//! - [`Frontier`] keeps only the O(log n) hashes on the tree's right edge,
//!   enough to extend the tree and compute its current root. `audit verify`
//!   uses it so that its memory stays flat however long the log grows.

use tlog_tiles::{
    check_record, check_tree, node_hash, prove_record, prove_tree, record_hash, stored_hash_count,
    stored_hash_index, tree_hash, HashReader,
};
pub use tlog_tiles::{Hash, EMPTY_HASH};

/// Leaf hash of one stored entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    record_hash(entry)
}

/// Every stored hash of a log, with its right edge at hand.
#[derive(Debug, Default)]
pub struct Tree {
    /// The right edge: extends the tree and gives its root without a read.
    frontier: Frontier,
    store: Store,
}

/// Where a [`Tree`] keeps its stored hashes.
#[derive(Debug)]
enum Store {
    Memory(Vec<Hash>),
    File(HashFile),
}

impl Default for Store {
    fn default() -> Self {
        Store::Memory(Vec::new())
    }
}

/// Stored hashes in a file of 32-byte hashes in tlog's stored-hash order,
/// the newest (up to [`HashFile::FLUSH_AT`]) still in memory. The file is
/// derived from the log and written without a sync: the node rewrites it
/// as it replays the log at start.
#[derive(Debug)]
struct HashFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    /// Hashes written to the file: stored indexes `0..on_disk`.
    on_disk: u64,
    /// Stored indexes `on_disk..`.
    tail: Vec<Hash>,
    /// A write failed (reported once); the tail grows until one succeeds.
    failed: bool,
}

impl HashFile {
    /// Hashes gathered in memory before one write (1 MiB).
    const FLUSH_AT: usize = 32 * 1024;

    fn append(&mut self, new: &[Hash]) {
        self.tail.extend_from_slice(new);
        if self.tail.len() >= Self::FLUSH_AT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use std::os::unix::fs::FileExt as _;
        let bytes: Vec<u8> = self.tail.iter().flat_map(|h| h.0).collect();
        let at = self.on_disk.saturating_mul(32);
        match self.file.write_all_at(&bytes, at) {
            Ok(()) => {
                self.on_disk = self.on_disk.saturating_add(self.tail.len() as u64);
                self.tail.clear();
                self.failed = false;
            }
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "could not write Merkle hashes to {}: {e}; keeping them in memory",
                        self.path.display()
                    );
                }
                self.failed = true;
            }
        }
    }

    fn read(&self, index: u64) -> Option<Hash> {
        use std::os::unix::fs::FileExt as _;
        if index >= self.on_disk {
            let i = usize::try_from(index.checked_sub(self.on_disk)?).ok()?;
            return self.tail.get(i).copied();
        }
        let mut h = [0u8; 32];
        self.file
            .read_exact_at(&mut h, index.checked_mul(32)?)
            .ok()?;
        Some(Hash(h))
    }
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                let h = match &self.store {
                    Store::Memory(v) => usize::try_from(i).ok().and_then(|i| v.get(i)).copied(),
                    Store::File(f) => f.read(i),
                };
                h.ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// An empty tree, every hash in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree whose stored hashes go to the file at `path` (created,
    /// or emptied; mode 0600), only the right edge and the newest hashes
    /// staying in memory.
    pub fn with_file(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok(Tree {
            frontier: Frontier::new(),
            store: Store::File(HashFile {
                path: path.to_path_buf(),
                file,
                on_disk: 0,
                tail: Vec::new(),
                failed: false,
            }),
        })
    }

    /// The tree of the first `size` leaves whose stored hashes a file at
    /// `path` already holds (written by [`Tree::with_file`] and synced with
    /// [`Tree::sync_file`]): hashes past them are cut off, the right edge is
    /// read back, and the tree's root must be `root`. Errors say why the
    /// file cannot serve (too short, unreadable, another root).
    pub fn resume_file(path: &std::path::Path, size: u64, root: Hash) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let needed = stored_hash_count(size);
        let needed_bytes = needed
            .checked_mul(32)
            .ok_or_else(|| format!("a tree of {size} leaves is out of range"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if len < needed_bytes {
            return Err(format!(
                "{} holds {len} bytes; a tree of {size} leaves needs {needed_bytes}",
                path.display()
            ));
        }
        if len > needed_bytes {
            file.set_len(needed_bytes)
                .map_err(|e| format!("cannot cut {} back: {e}", path.display()))?;
        }
        let store = HashFile {
            path: path.to_path_buf(),
            file,
            on_disk: needed,
            tail: Vec::new(),
            failed: false,
        };
        let mut edge = Vec::new();
        for (_, i) in edge_indexes(size) {
            let h = store
                .read(i)
                .ok_or_else(|| format!("cannot read hash {i} of {}", path.display()))?;
            edge.push((i, h));
        }
        let frontier =
            Frontier::from_edge(size, &edge).ok_or("the tree's right edge does not read")?;
        let tree = Tree {
            frontier,
            store: Store::File(store),
        };
        if tree.root() != root {
            return Err(format!(
                "the {size} leaves {} holds do not hash to the expected root",
                path.display()
            ));
        }
        Ok(tree)
    }

    /// Writes the hashes still in memory to the tree's file and makes the
    /// file durable (a snapshot that relies on it is written after). A
    /// tree in memory has nothing to sync.
    pub fn sync_file(&mut self) -> std::io::Result<()> {
        match self.flush_file()? {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Writes the hashes still in memory to the tree's file and returns a
    /// handle to it, to be synced off the caller's thread (`None` for a
    /// tree in memory).
    pub fn flush_file(&mut self) -> std::io::Result<Option<std::fs::File>> {
        let Store::File(f) = &mut self.store else {
            return Ok(None);
        };
        if !f.tail.is_empty() {
            f.flush();
            if f.failed {
                return Err(std::io::Error::other(format!(
                    "could not write Merkle hashes to {}",
                    f.path.display()
                )));
            }
        }
        f.file.try_clone().map(Some)
    }

    /// The leaf hash of entry `index`, if the tree holds it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        if index >= self.size() {
            return None;
        }
        self.read_hashes(&[stored_hash_index(0, index)])
            .ok()
            .and_then(|v| v.first().copied())
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size
    }

    /// Stored hashes held in memory (the right edge and, for a tree kept
    /// in a file, those not yet written).
    pub fn hashes_in_memory(&self) -> usize {
        let stored = match &self.store {
            Store::Memory(v) => v.len(),
            Store::File(f) => f.tail.len(),
        };
        stored.saturating_add(self.frontier.held())
    }

    /// Appends the leaf for `entry` (its exact stored bytes).
    pub fn push(&mut self, entry: &[u8]) {
        let new = self.frontier.push_hashes(entry);
        match &mut self.store {
            Store::Memory(v) => v.extend(new),
            Store::File(f) => f.append(&new),
        }
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Root of the tree's first `n` leaves, if `n <= size`.
    pub fn root_at(&self, n: u64) -> Option<Hash> {
        if n > self.size() {
            return None;
        }
        if n == self.size() {
            return Some(self.root());
        }
        tree_hash(n, self).ok()
    }

    /// Inclusion proof for leaf `index` in the tree of size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if size > self.size() {
            return None;
        }
        prove_record(size, index, self).ok()
    }

    /// Consistency proof from size `old` to size `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if new > self.size() || old > new {
            return None;
        }
        if old == 0 {
            return Some(Vec::new());
        }
        prove_tree(new, old, self).ok()
    }
}

/// Checks that `entry` is leaf `index` of the tree of `size` with `root`.
pub fn verify_inclusion(proof: &[Hash], size: u64, root: Hash, index: u64, entry: &[u8]) -> bool {
    check_record(&proof.to_vec(), size, root, index, leaf_hash(entry)).is_ok()
}

/// Checks that the tree (`old_size`, `old_root`) is a prefix of
/// (`new_size`, `new_root`).
pub fn verify_consistency(
    proof: &[Hash],
    old_size: u64,
    old_root: Hash,
    new_size: u64,
    new_root: Hash,
) -> bool {
    if old_size == 0 {
        return old_root == EMPTY_HASH && proof.is_empty();
    }
    if old_size == new_size {
        return old_root == new_root && proof.is_empty();
    }
    check_tree(&proof.to_vec(), new_size, new_root, old_size, old_root).is_ok()
}

/// The right edge of a tree: extends it and gives its root in O(log n)
/// memory.
///
/// The edge is the roots of the complete subtrees the leaves so far make,
/// largest (leftmost) first: one per set bit of the size. Appending a leaf
/// merges equal-sized subtrees from the right, which makes exactly the
/// stored hashes tlog makes for that leaf; the root folds the edge from the
/// right. Hashing is `tlog_tiles`' own (`record_hash`, `node_hash`).
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    size: u64,
    /// (height, hash) of each complete subtree, largest first.
    edge: Vec<(u8, Hash)>,
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let edge = self.edge();
        indexes
            .iter()
            .map(|i| {
                edge.iter()
                    .find(|(j, _)| j == i)
                    .map(|(_, h)| *h)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// The stored-hash index of each complete subtree on the right edge of a
/// tree of `size` leaves, largest first, with its height.
// Heights are below 64 and shifts by them stay in range; `start` counts
// leaves before `size`.
#[allow(clippy::arithmetic_side_effects)]
fn edge_indexes(size: u64) -> impl Iterator<Item = (u8, u64)> {
    let mut start = 0u64;
    (0..64u8).rev().filter_map(move |h| {
        let width = 1u64 << h;
        (size & width != 0).then(|| {
            let at = stored_hash_index(h, start >> h);
            start += width;
            (h, at)
        })
    })
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf for `entry`.
    pub fn push(&mut self, entry: &[u8]) {
        self.push_hashes(entry);
    }

    /// Appends the leaf for `entry`; returns the stored hashes it made
    /// (the leaf's and the interior nodes it completed), in stored order.
    // Heights stay below 64: a log's size cannot reach 2^64.
    #[allow(clippy::arithmetic_side_effects)]
    fn push_hashes(&mut self, entry: &[u8]) -> Vec<Hash> {
        let mut h = record_hash(entry);
        let mut new = Vec::with_capacity(2);
        new.push(h);
        let mut height = 0u8;
        while let Some(&(top, left)) = self.edge.last() {
            if top != height {
                break;
            }
            self.edge.pop();
            h = node_hash(left, h);
            height += 1;
            new.push(h);
        }
        self.edge.push((height, h));
        self.size += 1;
        new
    }

    /// Root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut right = self.edge.iter().rev();
        let Some(&(_, mut h)) = right.next() else {
            return EMPTY_HASH;
        };
        for &(_, left) in right {
            h = node_hash(left, h);
        }
        h
    }

    /// Hashes held (for memory checks).
    pub fn held(&self) -> usize {
        self.edge.len()
    }

    /// The right edge as (stored-hash index, hash) pairs, to save it.
    pub fn edge(&self) -> Vec<(u64, Hash)> {
        edge_indexes(self.size)
            .zip(&self.edge)
            .map(|((_, i), (_, h))| (i, *h))
            .collect()
    }

    /// The tree of `size` leaves whose right edge is `edge` (as
    /// [`Frontier::edge`] gave it); `None` unless `edge` is exactly the
    /// hashes such a tree keeps.
    pub fn from_edge(size: u64, edge: &[(u64, Hash)]) -> Option<Self> {
        let want: Vec<(u8, u64)> = edge_indexes(size).collect();
        if want.len() != edge.len() || want.iter().zip(edge).any(|((_, w), (i, _))| w != i) {
            return None;
        }
        Some(Frontier {
            size,
            edge: want
                .iter()
                .zip(edge)
                .map(|((h, _), (_, x))| (*h, *x))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    // RFC 6962 section 2.1, written out directly as the reference.
    fn mth(d: &[&[u8]]) -> [u8; 32] {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => Sha256::digest([&[0u8][..], d[0]].concat()).into(),
            n => {
                let k = n.next_power_of_two() / 2;
                let k = if k == n { n / 2 } else { k };
                Sha256::digest([&[1u8][..], &mth(&d[..k]), &mth(&d[k..])].concat()).into()
            }
        }
    }

    fn path(m: usize, d: &[&[u8]]) -> Vec<[u8; 32]> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = largest_power_of_two_below(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn subproof(m: usize, d: &[&[u8]], b: bool) -> Vec<[u8; 32]> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = largest_power_of_two_below(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn largest_power_of_two_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// The CT test leaves (certificate-transparency reference tests).
    fn leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    #[test]
    fn roots_match_the_published_rfc6962_vectors() {
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut tree = Tree::new();
        let mut frontier = Frontier::new();
        assert_eq!(tree.root(), EMPTY_HASH);
        assert_eq!(
            hex::encode(EMPTY_HASH.0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (i, leaf) in leaves().iter().enumerate() {
            tree.push(leaf);
            frontier.push(leaf);
            assert_eq!(hex::encode(tree.root().0), roots[i], "size {}", i + 1);
            assert_eq!(frontier.root(), tree.root());
        }
    }

    #[test]
    fn proofs_match_the_rfc_definitions_and_verify() {
        let data: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("entry {i}").into_bytes())
            .collect();
        let mut tree = Tree::new();
        for d in &data {
            tree.push(d);
        }
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        for n in 1..=data.len() {
            let root = tree.root_at(n as u64).unwrap();
            assert_eq!(root.0, mth(&refs[..n]));
            for (m, leaf) in data.iter().enumerate().take(n) {
                let p = tree.inclusion_proof(m as u64, n as u64).unwrap();
                let want = path(m, &refs[..n]);
                assert_eq!(
                    p.iter().map(|h| h.0).collect::<Vec<_>>(),
                    want,
                    "PATH({m}, D[{n}])"
                );
                assert!(verify_inclusion(&p, n as u64, root, m as u64, leaf));
                assert!(!verify_inclusion(&p, n as u64, root, m as u64, b"forged"));
            }
            for m in 1..=n {
                let p = tree.consistency_proof(m as u64, n as u64).unwrap();
                let want = if m == n {
                    vec![]
                } else {
                    subproof(m, &refs[..n], true)
                };
                assert_eq!(
                    p.iter().map(|h| h.0).collect::<Vec<_>>(),
                    want,
                    "PROOF({m}, D[{n}])"
                );
                let old = tree.root_at(m as u64).unwrap();
                assert!(verify_consistency(&p, m as u64, old, n as u64, root));
                if m < n {
                    let mut bad = old;
                    bad.0[0] ^= 1;
                    assert!(!verify_consistency(&p, m as u64, bad, n as u64, root));
                }
            }
        }
    }

    #[test]
    fn frontier_memory_stays_logarithmic() {
        let mut f = Frontier::new();
        for i in 0..5000u32 {
            f.push(&i.to_be_bytes());
            assert!(f.held() <= 2 * 64);
        }
        assert!(f.held() <= 13);
    }

    #[test]
    fn a_tree_kept_in_a_file_answers_as_one_in_memory_and_holds_little() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.hashes");
        let mut mem = Tree::new();
        let mut file = Tree::with_file(&path).unwrap();
        // Past two flushes, so that old hashes are read from the file.
        let n: u64 = 40_000;
        for i in 0..n {
            let entry = i.to_be_bytes();
            mem.push(&entry);
            file.push(&entry);
            if i % 9_973 == 0 {
                assert_eq!(file.root(), mem.root(), "root at {i}");
            }
        }
        assert!(std::fs::metadata(&path).unwrap().len() >= 32 * HashFile::FLUSH_AT as u64);
        assert!(
            file.hashes_in_memory() < HashFile::FLUSH_AT + 64,
            "{} hashes in memory",
            file.hashes_in_memory()
        );
        assert!(mem.hashes_in_memory() as u64 >= 2 * n - 64);
        for size in [1, 2, 3, 1_000, 32_768, 32_769, 39_999, n] {
            assert_eq!(file.root_at(size), mem.root_at(size), "root at {size}");
            for old in [1, size / 2, size.saturating_sub(1)] {
                if old == 0 {
                    continue;
                }
                assert_eq!(
                    file.consistency_proof(old, size),
                    mem.consistency_proof(old, size),
                    "consistency {old}..{size}"
                );
            }
            let leaf = size - 1;
            let proof = file.inclusion_proof(leaf, size).unwrap();
            assert_eq!(Some(&proof), mem.inclusion_proof(leaf, size).as_ref());
            assert!(verify_inclusion(
                &proof,
                size,
                file.root_at(size).unwrap(),
                leaf,
                &leaf.to_be_bytes()
            ));
        }
        // Damage to the file shows: a root read through it no longer
        // matches (the node rewrites the file at each start).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1; // the first leaf's hash
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(file.root_at(1), mem.root_at(1));
    }

    #[test]
    fn the_frontier_keeps_the_edge_tlog_names_and_roots_as_tlog_does() {
        let mut f = Frontier::new();
        let mut mem = Tree::new();
        for n in 1..=2_100u64 {
            let entry = n.to_be_bytes();
            let made = f.push_hashes(&entry);
            // The stored hashes tlog makes for that leaf, from the tree
            // that holds them all.
            let first = stored_hash_count(n - 1);
            mem.push(&entry);
            let want: Vec<u64> = (first..stored_hash_count(n)).collect();
            assert_eq!(made, mem.read_hashes(&want).unwrap(), "leaf {n}");
            let edge: Vec<u64> = f.edge().iter().map(|(i, _)| *i).collect();
            assert_eq!(edge, tlog_tiles::sub_tree_index(0, n, vec![]), "size {n}");
            assert_eq!(f.root(), tree_hash(n, &mem).unwrap(), "root at {n}");
            let back = Frontier::from_edge(n, &f.edge()).unwrap();
            assert_eq!(back.root(), f.root());
        }
        assert!(Frontier::from_edge(5, &f.edge()).is_none());
    }

    #[test]
    fn a_synced_tree_file_resumes_at_a_size_and_refuses_another_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.hashes");
        let mut mem = Tree::new();
        let mut file = Tree::with_file(&path).unwrap();
        let k: u64 = 33_001;
        for i in 0..k {
            mem.push(&i.to_be_bytes());
            file.push(&i.to_be_bytes());
        }
        file.sync_file().unwrap();
        let root_k = file.root();
        // Hashes written past the snapshot's size (a crash before the
        // log held them) are cut off on resume.
        for i in k..k + 40_000 {
            file.push(&i.to_be_bytes());
        }
        file.sync_file().unwrap();
        drop(file);
        let mut resumed = Tree::resume_file(&path, k, root_k).unwrap();
        assert_eq!(resumed.size(), k);
        assert_eq!(resumed.root(), mem.root());
        assert_eq!(resumed.leaf(k - 1), Some(leaf_hash(&(k - 1).to_be_bytes())));
        assert_eq!(resumed.leaf(k), None);
        // It grows on as the tree in memory does.
        for i in k..k + 100 {
            mem.push(&i.to_be_bytes());
            resumed.push(&i.to_be_bytes());
        }
        assert_eq!(resumed.root(), mem.root());
        assert_eq!(resumed.root_at(17), mem.root_at(17));
        assert_eq!(resumed.inclusion_proof(5, k), mem.inclusion_proof(5, k));
        drop(resumed);
        // Another root, or a file too short, is refused with the reason.
        let err = Tree::resume_file(&path, k, mem.root()).unwrap_err();
        assert!(err.contains("do not hash"), "{err}");
        let err = Tree::resume_file(&path, k + 1_000, root_k).unwrap_err();
        assert!(err.contains("needs"), "{err}");
    }
}
