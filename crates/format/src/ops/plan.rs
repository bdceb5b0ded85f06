//! Plans: what an operation will do, as plain data, computed from metadata alone.

use crate::spec::{Bat, SparseLayout, BAT_ENTRY_UNUSED, SECTOR_SIZE};

/// One block move of a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Block index.
    pub block: u64,
    /// Current byte offset (bitmap start).
    pub from: u64,
    /// New byte offset.
    pub to: u64,
}

/// What a compaction does: which blocks it releases, which it moves where, and the
/// resulting end of live data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactPlan {
    /// Blocks whose BAT entries become unused.
    pub release: Vec<u64>,
    /// Moves, in the order they run: the highest live block into the lowest free slot.
    pub moves: Vec<Move>,
    /// The BAT once everything ran.
    pub new_bat: Bat,
    /// Where the footer goes: past the last live block and the metadata.
    pub new_footer_at: u64,
}

/// Plans a compaction. The slots are the positions blocks occupy now (known not to
/// overlap); released blocks free theirs, and live blocks stored highest move down into
/// the lowest free slots until no free slot lies below a live block.
#[cfg(test)]
pub fn plan_compact(bat: &Bat, releasable: &[u64], layout: &SparseLayout) -> CompactPlan {
    plan_compact_with_holes(bat, releasable, &[], layout)
}

/// Free slots for blocks in the unreferenced space between `floor` and the highest
/// allocated block: space that no BAT entry and no metadata range of `layout` covers,
/// as left by a compaction cancelled (or killed) part-way, or by an allocation cut
/// short. Each slot is a block's stride, placed as the layout places blocks (data on a
/// [`DATA_ALIGNMENT`] boundary, bitmap just before), in increasing order.
///
/// [`DATA_ALIGNMENT`]: crate::spec::layout::DATA_ALIGNMENT
pub fn free_slots(bat: &Bat, layout: &SparseLayout, floor: u64) -> Vec<u64> {
    let stride = layout.stride();
    let mut taken: Vec<(u64, u64)> = bat
        .allocated()
        .map(|(_, off)| (off, off + stride))
        .chain(layout.metadata.iter().copied())
        .collect();
    taken.sort_unstable();
    let mut slots = Vec::new();
    let mut cursor = floor;
    for (start, end) in taken {
        let mut at = layout.place_block(cursor);
        while at + stride <= start {
            slots.push(at);
            at = layout.place_block(at + stride);
        }
        cursor = cursor.max(end);
    }
    slots
}

/// [`plan_compact`] that may also move blocks into `holes`: free slots that no block
/// occupies now (see [`free_slots`]), so that a compaction cut short is completed by
/// the next one. `layout` is the file's: the blocks' stride and where its data ends.
pub fn plan_compact_with_holes(
    bat: &Bat,
    releasable: &[u64],
    holes: &[u64],
    layout: &SparseLayout,
) -> CompactPlan {
    let stride = layout.stride();
    let mut new_bat = bat.clone();
    let mut release: Vec<u64> = releasable.to_vec();
    release.sort_unstable();
    release.dedup();
    for &b in &release {
        new_bat.set(b, BAT_ENTRY_UNUSED);
    }
    let mut free: Vec<u64> = release
        .iter()
        .filter_map(|&b| bat.block_offset(b))
        .chain(holes.iter().copied())
        .collect();
    free.sort_unstable_by(|a, b| b.cmp(a)); // pop() yields the lowest
    let mut live: Vec<(u64, u64)> = new_bat.allocated().map(|(i, off)| (off, i)).collect();
    live.sort_unstable(); // pop() yields the highest
    let mut moves = Vec::new();
    while let (Some(&lowest_free), Some(&(highest, block))) = (free.last(), live.last()) {
        if lowest_free >= highest {
            break;
        }
        free.pop();
        live.pop();
        moves.push(Move {
            block,
            from: highest,
            to: lowest_free,
        });
        // Fits: lowest_free is an existing entry's sector number.
        new_bat.set(block, (lowest_free / SECTOR_SIZE) as u32);
        // The vacated slot is free now, and above every remaining live block.
        free.push(highest);
        free.sort_unstable_by(|a, b| b.cmp(a));
    }
    let live_end = new_bat
        .allocated()
        .map(|(_, off)| off + stride)
        .max()
        .unwrap_or(0);
    let new_footer_at = layout.data_end(live_end);
    CompactPlan {
        release,
        moves,
        new_bat,
        new_footer_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout whose blocks take `stride` bytes (512 of bitmap) and whose metadata
    /// ends at `metadata_end`.
    fn layout(stride: u64, metadata_end: u64) -> SparseLayout {
        layout_with(stride, &[(0, metadata_end)])
    }

    fn layout_with(stride: u64, metadata: &[(u64, u64)]) -> SparseLayout {
        SparseLayout {
            block_size: stride - 512,
            bitmap_size: 512,
            header_offset: 512,
            table_offset: 1536,
            used_entries: 0,
            metadata: metadata.to_vec(),
            ignored_locators: Vec::new(),
            clipped_locators: Vec::new(),
            footer_at: u64::MAX,
        }
    }

    fn bat_of(entries: &[u32]) -> Bat {
        let mut b = Bat::new_unused(entries.len() as u32);
        for (i, &e) in entries.iter().enumerate() {
            b.set(i as u64, e);
        }
        b
    }

    #[test]
    fn compact_plan_moves_highest_blocks_into_released_holes() {
        // Blocks at sectors 10, 20, 30, 40 (stride 10 sectors); release block 0 and 2.
        let u = BAT_ENTRY_UNUSED;
        let bat = bat_of(&[10, 20, 30, 40, u]);
        let plan = plan_compact(&bat, &[0, 2], &layout(10 * 512, 10 * 512));
        assert_eq!(plan.release, vec![0, 2]);
        assert_eq!(
            plan.moves,
            vec![Move {
                block: 3,
                from: 40 * 512,
                to: 10 * 512
            }]
        );
        assert_eq!(plan.new_bat.entries(), &[u, 20, u, 10, u]);
        assert_eq!(plan.new_footer_at, 30 * 512);
    }

    #[test]
    fn compact_plan_with_nothing_released_moves_nothing() {
        let bat = bat_of(&[10, 20]);
        let plan = plan_compact(&bat, &[], &layout(10 * 512, 10 * 512));
        assert!(plan.moves.is_empty());
        assert_eq!(plan.new_footer_at, 30 * 512);
    }

    #[test]
    fn compact_plan_releasing_everything_ends_at_metadata() {
        let bat = bat_of(&[10, 20]);
        let plan = plan_compact(&bat, &[0, 1], &layout(10 * 512, 3 * 512));
        assert!(plan.moves.is_empty());
        assert_eq!(plan.new_bat.allocated_count(), 0);
        assert_eq!(plan.new_footer_at, 3 * 512);
    }

    #[test]
    fn compact_plan_never_moves_a_block_upwards() {
        let u = BAT_ENTRY_UNUSED;
        let bat = bat_of(&[50, 10, 20, 30, 40, u, 60]);
        let plan = plan_compact(&bat, &[1, 3], &layout(10 * 512, 10 * 512));
        for m in &plan.moves {
            assert!(m.to < m.from);
        }
        // Live blocks 0, 2, 4, 6 end up packed in the lowest slots.
        let mut offs: Vec<u64> = plan.new_bat.allocated().map(|(_, o)| o / 512).collect();
        offs.sort();
        assert_eq!(offs, vec![10, 20, 30, 40]);
    }

    #[test]
    fn free_slots_finds_aligned_gaps_below_the_last_block() {
        // Stride 4608 (bitmap 512 + 4096 data); metadata up to 2048; blocks at 3584
        // and, after a gap of two slots, at 3584 + 3 * 8192.
        let u = BAT_ENTRY_UNUSED;
        let first = 3584u64;
        let pitch = 8192u64; // align_block(first + 4608, 512) - first
        let bat = bat_of(&[(first / 512) as u32, u, ((first + 3 * pitch) / 512) as u32]);
        let slots = free_slots(
            &bat,
            &layout_with(4608, &[(0, 512), (512, 1536), (1536, 2048)]),
            2048,
        );
        assert_eq!(slots, vec![first + pitch, first + 2 * pitch]);
    }

    #[test]
    fn free_slots_of_a_packed_file_is_empty() {
        let bat = bat_of(&[7, 23, 39]);
        assert!(free_slots(&bat, &layout_with(8192, &[(0, 3584)]), 3584).is_empty());
    }

    #[test]
    fn compact_plan_fills_holes_left_by_an_earlier_run() {
        // Blocks at sectors 10 and 40 (stride 10 sectors), a hole at 20: block 1 moves.
        let bat = bat_of(&[10, 40]);
        let plan = plan_compact_with_holes(&bat, &[], &[20 * 512], &layout(10 * 512, 10 * 512));
        assert_eq!(
            plan.moves,
            vec![Move {
                block: 1,
                from: 40 * 512,
                to: 20 * 512
            }]
        );
        assert_eq!(plan.new_footer_at, 30 * 512);
    }
}
