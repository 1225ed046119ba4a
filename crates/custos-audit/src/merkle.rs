//! RFC 9162 (RFC 6962) Merkle tree hashing, the growing right edge of a tree,
//! and inclusion and consistency proofs with their verification.
//!
//! Nodes are addressed as (level, index): level 0 holds the leaf hashes, and
//! node (l, i) is the root of the complete subtree over leaves
//! `[i << l, (i + 1) << l)`. A store keeps every complete node it has ever
//! built, so any proof needs only O(log n) reads.

use aws_lc_rs::digest;

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// The address of one complete subtree hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = leaf hash).
    pub level: u8,
    /// Position among the nodes of that level.
    pub index: u64,
}

/// A proof that does not check out, or a request for one that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof names an index or size outside the tree.
    #[error("index {index} is not inside a tree of size {size}")]
    OutOfRange {
        /// Leaf index or older tree size.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The hashes do not lead to the expected root.
    #[error("the proof does not lead to the expected root hash")]
    Mismatch,
    /// The proof has the wrong number of hashes.
    #[error("the proof has the wrong length")]
    Length,
}

/// SHA-256(0x00 || data): the hash of one log entry.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// SHA-256(0x01 || left || right): the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    to_hash(digest::digest(&digest::SHA256, &buf))
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    to_hash(digest::digest(&digest::SHA256, b""))
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The nodes whose hashes make up the right edge of a tree of `size` leaves,
/// largest subtree first: one per set bit of `size`.
pub fn frontier_ids(size: u64) -> Vec<NodeId> {
    (0..64u8)
        .rev()
        .filter(|level| size >> level & 1 == 1)
        .map(|level| NodeId { level, index: (size >> level) - 1 })
        .collect()
}

/// The right edge of a tree: enough to append leaves and compute the root
/// without reading anything else.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash), highest level first, as [`frontier_ids`] orders them.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The edge of a tree of `size` leaves, from the hashes of [`frontier_ids`]`(size)` in that order.
    pub fn new(size: u64, hashes: &[Hash]) -> Result<Frontier, ProofError> {
        let ids = frontier_ids(size);
        if ids.len() != hashes.len() {
            return Err(ProofError::Length);
        }
        Ok(Frontier { size, nodes: ids.iter().zip(hashes).map(|(id, h)| (id.level, *h)).collect() })
    }

    /// Number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; returns the interior nodes it completed, lowest first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut done = Vec::new();
        self.push_into(leaf, &mut done);
        done
    }

    /// Appends one leaf hash and adds the interior nodes it completed to `done`.
    pub fn push_into(&mut self, leaf: Hash, done: &mut Vec<(NodeId, Hash)>) {
        let mut hash = leaf;
        let mut level = 0u8;
        let mut index = self.size;
        while index & 1 == 1 {
            // An odd index has its left sibling complete, as the last edge node.
            let Some((_, left)) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            done.push((NodeId { level, index }, hash));
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    /// The Merkle tree hash of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some((_, first)) = iter.next() else { return empty_root() };
        iter.fold(*first, |acc, (_, h)| node_hash(h, &acc))
    }
}

/// Reads stored node hashes; proofs are written against this so that a
/// caller can first learn which nodes are needed ([`needed_nodes`]), fetch
/// them in one query, then compute.
pub type NodeReader<'a> = dyn FnMut(NodeId) -> Hash + 'a;

/// Runs `compute` with a reader that records what it asks for and answers
/// zeros, and returns the distinct nodes asked for.
pub fn needed_nodes<T>(compute: impl FnOnce(&mut NodeReader<'_>) -> T) -> Vec<NodeId> {
    let mut ids = Vec::new();
    compute(&mut |id| {
        ids.push(id);
        [0; 32]
    });
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The hash of leaves `[start, end)` built from complete stored subtrees.
fn range_hash(start: u64, end: u64, read: &mut NodeReader<'_>) -> Hash {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return read(NodeId { level, index: start >> level });
    }
    let k = split(n);
    let left = range_hash(start, start + k, read);
    let right = range_hash(start + k, end, read);
    node_hash(&left, &right)
}

/// The root of the first `size` leaves, from stored nodes.
pub fn tree_hash(size: u64, read: &mut NodeReader<'_>) -> Hash {
    if size == 0 { empty_root() } else { range_hash(0, size, read) }
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3.1).
pub fn inclusion_proof(index: u64, size: u64, read: &mut NodeReader<'_>) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let mut path = Vec::new();
    path_into(index, 0, size, read, &mut path);
    Ok(path)
}

fn path_into(m: u64, start: u64, end: u64, read: &mut NodeReader<'_>, out: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < start + k {
        path_into(m, start, start + k, read, out);
        out.push(range_hash(start + k, end, read));
    } else {
        path_into(m, start + k, end, read, out);
        out.push(range_hash(start, start + k, read));
    }
}

/// The proof that the tree of `old` leaves is a prefix of the tree of `new` (RFC 9162 2.1.4.1).
pub fn consistency_proof(old: u64, new: u64, read: &mut NodeReader<'_>) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange { index: old, size: new });
    }
    let mut path = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, read, &mut path);
    }
    Ok(path)
}

fn subproof(m: u64, start: u64, end: u64, whole: bool, read: &mut NodeReader<'_>, out: &mut Vec<Hash>) {
    let n = end - start;
    if m == n {
        if !whole {
            out.push(range_hash(start, end, read));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, start + k, whole, read, out);
        out.push(range_hash(start + k, end, read));
    } else {
        subproof(m - k, start + k, end, false, read, out);
        out.push(range_hash(start, start + k, read));
    }
}

/// Checks an audit path (RFC 9162 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if &r != root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks a consistency proof between two roots (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange { index: old, size: new });
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root { Ok(()) } else { Err(ProofError::Mismatch) };
    }
    if old == 0 {
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::Length) };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else { return Err(ProofError::Length) };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The RFC 6962 test leaves used by Certificate Transparency implementations.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    /// Their roots at sizes 1..=8.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Builds a tree of `n` leaves and keeps every node, as a store would.
    fn build(leaves: &[Hash]) -> (Frontier, HashMap<NodeId, Hash>) {
        let mut f = Frontier::default();
        let mut nodes = HashMap::new();
        for (i, leaf) in leaves.iter().enumerate() {
            nodes.insert(NodeId { level: 0, index: i as u64 }, *leaf);
            nodes.extend(f.push(*leaf));
        }
        (f, nodes)
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn rfc6962_vector_roots_at_every_size() {
        let hashes: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect();
        let mut f = Frontier::default();
        for (i, leaf) in hashes.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(hex::encode(f.root()), ROOTS[i], "root at size {}", i + 1);
        }
        let (_, nodes) = build(&hashes);
        for size in 1..=8u64 {
            let root = tree_hash(size, &mut |id| nodes[&id]);
            assert_eq!(hex::encode(root), ROOTS[size as usize - 1]);
        }
        assert_eq!(hex::encode(empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_and_size_and_fail_when_altered() {
        let all = leaves(70);
        let (_, nodes) = build(&all);
        for size in 1..=70u64 {
            let root = tree_hash(size, &mut |id| nodes[&id]);
            for index in 0..size {
                let proof = inclusion_proof(index, size, &mut |id| nodes[&id]).expect("proof");
                verify_inclusion(&all[index as usize], index, size, &proof, &root).expect("verifies");
                let other = all[((index + 1) % 70) as usize];
                if size > 1 {
                    assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
                }
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(verify_inclusion(&all[index as usize], index, size, &bad, &root).is_err());
                    assert!(verify_inclusion(&all[index as usize], index, size, &proof[1..], &root).is_err());
                }
            }
        }
        assert!(inclusion_proof(5, 5, &mut |id| nodes[&id]).is_err());
    }

    #[test]
    fn consistency_proofs_verify_for_every_pair_and_fail_when_altered() {
        let all = leaves(40);
        let (_, nodes) = build(&all);
        let roots: Vec<Hash> = (0..=40u64).map(|n| tree_hash(n, &mut |id| nodes[&id])).collect();
        for new in 1..=40u64 {
            for old in 1..=new {
                let proof = consistency_proof(old, new, &mut |id| nodes[&id]).expect("proof");
                verify_consistency(old, new, &proof, &roots[old as usize], &roots[new as usize]).expect("verifies");
                if old < new {
                    let wrong = &roots[(old - 1) as usize];
                    assert!(verify_consistency(old, new, &proof, wrong, &roots[new as usize]).is_err(), "{old} {new}");
                }
            }
        }
    }

    #[test]
    fn needed_nodes_are_exactly_the_ones_read() {
        let all = leaves(1000);
        let (f, nodes) = build(&all);
        let ids = needed_nodes(|read| inclusion_proof(377, 1000, read));
        assert!(ids.len() <= 2 * 10, "{}", ids.len());
        let only: HashMap<NodeId, Hash> = ids.iter().map(|id| (*id, nodes[id])).collect();
        let proof = inclusion_proof(377, 1000, &mut |id| only[&id]).expect("proof");
        verify_inclusion(&all[377], 377, 1000, &proof, &f.root()).expect("verifies");
        let edge: Vec<Hash> = frontier_ids(1000).iter().map(|id| nodes[id]).collect();
        assert_eq!(Frontier::new(1000, &edge).expect("edge").root(), f.root());
    }
}
