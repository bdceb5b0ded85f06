//! Where a range of one file's virtual bytes lives, and the merging of neighbouring
//! pieces into one.

/// Where a range of one file's virtual bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerExtent {
    /// Stored in this file (or its host device) at `file_offset`.
    Data {
        /// Byte offset in the file (or device).
        file_offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Not stored here: reads as zeros in a parentless disk.
    Zero {
        /// Length in bytes.
        len: u64,
    },
    /// Not stored here: comes from the parent.
    Parent {
        /// Length in bytes.
        len: u64,
    },
}

impl LayerExtent {
    /// Length of the extent.
    pub fn len(&self) -> u64 {
        match *self {
            LayerExtent::Data { len, .. }
            | LayerExtent::Zero { len }
            | LayerExtent::Parent { len } => len,
        }
    }

    /// Whether the extent is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `e` to `out`, merging it into the last piece when they continue each other.
pub(crate) fn push(out: &mut Vec<LayerExtent>, e: LayerExtent) {
    if let Some(last) = out.last_mut() {
        match (last, e) {
            (LayerExtent::Zero { len }, LayerExtent::Zero { len: l })
            | (LayerExtent::Parent { len }, LayerExtent::Parent { len: l }) => {
                *len += l;
                return;
            }
            (
                LayerExtent::Data { file_offset, len },
                LayerExtent::Data {
                    file_offset: o,
                    len: l,
                },
            ) if *file_offset + *len == o => {
                *len += l;
                return;
            }
            _ => {}
        }
    }
    out.push(e);
}
