//! Byte-exact layer deltas: carry what changed inside a layer and rebuild the very blob on
//! the far side, so the manifest (and every signature over it) stays as it was.
//!
//! A delta blob is the data a rebuilder needs (small, held in memory at push) followed by
//! the op stream of the tar delta (streamed):
//!
//! ```text
//! "IMODELTA"  version (1 byte, 1)  rebuild-data length (8 bytes, big-endian)
//! rebuild data                     empty for an uncompressed layer (rebuilder `tar`)
//! op stream                        to the end of the blob
//! ```

use std::io::Read;

// The tar delta (source index, differ, applier).
pub mod tar_delta;

// Rebuilders of compressed layers from their plain tar.
pub mod goflate;
pub mod gzip;

/// The rebuilder of an uncompressed layer: its tar is the blob.
pub const TAR: &str = "tar";
/// The media type of a delta blob in an archive.
pub const MEDIA_TYPE: &str = "application/vnd.imo.layer.delta.v1";
/// The most source layers one delta may copy from.
pub const MAX_SOURCES: usize = 255;
/// The most rebuild data one delta may carry: push holds it whole.
pub const MAX_REBUILD_DATA: u64 = 32 << 20;

const MAGIC: &[u8; 8] = b"IMODELTA";
const VERSION: u8 = 1;

/// A delta blob of `rebuild` data and `ops`.
pub fn encode(rebuild: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(MAGIC.len() + 9 + rebuild.len() + ops.len());
    blob.extend_from_slice(MAGIC);
    blob.push(VERSION);
    blob.extend_from_slice(&(rebuild.len() as u64).to_be_bytes());
    blob.extend_from_slice(rebuild);
    blob.extend_from_slice(ops);
    blob
}

/// Reads a delta blob's head and rebuild data, leaving `r` at its op stream.
pub fn read_head(r: &mut dyn Read) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 17];
    r.read_exact(&mut head)
        .map_err(|e| format!("its head cannot be read: {e}"))?;
    if &head[..8] != MAGIC {
        return Err("it is not an imo layer delta".into());
    }
    if head[8] != VERSION {
        return Err(format!(
            "it is a layer delta of version {}, this imo reads version {VERSION}: use a newer imo",
            head[8]
        ));
    }
    let len = u64::from_be_bytes(head[9..].try_into().expect("8 bytes"));
    if len > MAX_REBUILD_DATA {
        return Err(format!(
            "it declares {len} bytes of rebuild data, more than the {MAX_REBUILD_DATA} imo reads"
        ));
    }
    let mut data = Vec::new();
    r.take(len)
        .read_to_end(&mut data)
        .map_err(|e| format!("its rebuild data cannot be read: {e}"))?;
    if data.len() as u64 != len {
        return Err(format!(
            "it ends inside its rebuild data ({} of {len} bytes)",
            data.len()
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_blob_reads_back_its_parts() {
        let blob = encode(b"rebuild", b"ops...");
        let mut r = &blob[..];
        assert_eq!(read_head(&mut r).unwrap(), b"rebuild");
        assert_eq!(r, b"ops...");
    }

    #[test]
    fn a_damaged_head_is_named() {
        let blob = encode(b"rebuild", b"ops");
        let mut foreign = blob.clone();
        foreign[0] = b'X';
        assert!(
            read_head(&mut &foreign[..])
                .unwrap_err()
                .contains("not an imo layer delta")
        );
        let mut newer = blob.clone();
        newer[8] = 2;
        assert!(
            read_head(&mut &newer[..])
                .unwrap_err()
                .contains("version 2")
        );
        let mut huge = blob.clone();
        huge[9..17].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(read_head(&mut &huge[..]).unwrap_err().contains("more than"));
        assert!(
            read_head(&mut &blob[..20])
                .unwrap_err()
                .contains("ends inside")
        );
        assert!(read_head(&mut &blob[..5]).unwrap_err().contains("head"));
    }
}
