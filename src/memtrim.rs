//! Giving freed heap memory back to the kernel after the daemon's bursts of
//! allocation.
//!
//! In Nova mode the periodic passes (`update_available_resource`,
//! `_sync_power_states`) read the whole list of the host's instances from the
//! conductor at once: the reply, its JSON and the objects made from it are tens
//! of KiB per instance, all freed when the pass ends. glibc's malloc keeps such
//! freed chunks in its arenas rather than returning them (only the top of the
//! main heap is trimmed, and only past a threshold), so the daemon's resident
//! size followed the largest pass it ever ran and grew with the instance count
//! although nothing stayed allocated. The same holds for an image import.
//! [`release`] asks malloc to hand back the free pages of every arena
//! (`malloc_trim(0)`, which also returns free pages in the middle of a heap);
//! it is called at the end of each of those passes. With another allocator, or
//! off glibc, it does nothing.

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks malloc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_after_a_burst_keeps_live_memory() {
        let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024]).collect();
        let burst: Vec<Vec<u8>> = (0..4096).map(|_| vec![7u8; 512]).collect();
        drop(burst);
        super::release();
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|b| *b == i as u8)));
    }
}
