//! C2SP tlog-tiles paths: `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`.
//!
//! Tiles have height 8: tile `L/N` holds the hashes of Merkle level `8L`,
//! indexes `[256 N, 256 N + W)`. Full tiles (W = 256) never change.

use crate::AuditError;

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Merkle levels per tile level.
pub const TILE_HEIGHT: u8 = 8;

/// One tile or entry bundle, as a path names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRef {
    /// Tile level, or `None` for an entry bundle.
    pub level: Option<u8>,
    /// Tile index within its level.
    pub index: u64,
    /// Number of hashes or entries, 1..=256.
    pub width: u64,
}

impl TileRef {
    /// The Merkle level of the hashes in this tile (0 for entry bundles).
    pub fn merkle_level(&self) -> u8 {
        self.level.unwrap_or(0) * TILE_HEIGHT
    }

    /// The first hash (or entry) index it holds at its Merkle level.
    pub fn start(&self) -> u64 {
        self.index * TILE_WIDTH
    }

    /// The path below the log prefix, e.g. `tile/0/x001/234.p/5`.
    pub fn path(&self) -> String {
        let level = self.level.map_or_else(|| "entries".to_string(), |l| l.to_string());
        let mut out = format!("tile/{level}/{}", encode_index(self.index));
        if self.width < TILE_WIDTH {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }

    /// Parses the part of a path after `tile/`; refuses non-canonical forms.
    pub fn parse(path: &str) -> Result<TileRef, AuditError> {
        let bad = || AuditError::Format(format!("{path:?} is not a tile path"));
        let (level_text, rest) = path.split_once('/').ok_or_else(bad)?;
        let level = match level_text {
            "entries" => None,
            l => {
                let level: u8 = l.parse().map_err(|_| bad())?;
                if level > 7 || l != level.to_string() {
                    return Err(bad());
                }
                Some(level)
            }
        };
        let (index_text, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let width: u64 = w.parse().map_err(|_| bad())?;
                if !(1..TILE_WIDTH).contains(&width) || w != width.to_string() {
                    return Err(bad());
                }
                (i, width)
            }
            None => (rest, TILE_WIDTH),
        };
        let mut index: u64 = 0;
        for group in index_text.split('/') {
            let digits = group.strip_prefix('x').unwrap_or(group);
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            index = index.checked_mul(1000).and_then(|i| i.checked_add(digits.parse().ok()?)).ok_or_else(bad)?;
        }
        let tile = TileRef { level, index, width };
        if encode_index(index) != index_text {
            return Err(bad());
        }
        Ok(tile)
    }
}

/// `1234067` → `x001/x234/067`.
fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// The tiles a client of a tree of `size` entries reads at `level` (None = entry bundles), in order.
pub fn tiles_for(size: u64, level: Option<u8>) -> Vec<TileRef> {
    let merkle = level.unwrap_or(0) * TILE_HEIGHT;
    let count = if u32::from(merkle) >= 64 { 0 } else { size >> merkle };
    let full = count / TILE_WIDTH;
    let mut out: Vec<TileRef> = (0..full).map(|index| TileRef { level, index, width: TILE_WIDTH }).collect();
    if count % TILE_WIDTH > 0 {
        out.push(TileRef { level, index: full, width: count % TILE_WIDTH });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_c2sp_examples() {
        let t = TileRef { level: Some(0), index: 1_234_067, width: 256 };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        assert_eq!(TileRef { level: None, index: 5, width: 7 }.path(), "tile/entries/005.p/7");
        assert_eq!(TileRef { level: Some(1), index: 1000, width: 256 }.path(), "tile/1/x001/000");
        for t in [t, TileRef { level: None, index: 5, width: 7 }, TileRef { level: Some(2), index: 0, width: 1 }] {
            let path = t.path();
            assert_eq!(TileRef::parse(path.strip_prefix("tile/").expect("prefix")).expect("parse"), t);
        }
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for bad in [
            "0/5",
            "0/0005",
            "0/x000/005",
            "0/005.p/0",
            "0/005.p/256",
            "0/005.p/07",
            "8/000",
            "00/000",
            "x/000",
            "0/",
            "0/x001",
        ] {
            assert!(TileRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiles_for_a_size() {
        assert_eq!(tiles_for(0, Some(0)), vec![]);
        let t = tiles_for(600, Some(0));
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], TileRef { level: Some(0), index: 2, width: 88 });
        assert_eq!(tiles_for(600, Some(1)), vec![TileRef { level: Some(1), index: 0, width: 2 }]);
        assert_eq!(tiles_for(600, Some(2)), vec![]);
    }
}
