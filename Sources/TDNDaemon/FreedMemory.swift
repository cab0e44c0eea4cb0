import CMemory
import Dispatch

/// Gives memory freed by a swap back to the system. A reload builds a whole new snapshot while
/// the old one serves; once the old one is dropped its pages stay in glibc's arenas (freed
/// chunks amid live ones are not returned by `free`), so without this a process that reloads a
/// large zone grows by about a snapshot per reload until fragmentation settles (measured: 232
/// MB to 858 MB in six reloads of a 200,000-record zone). `malloc_trim` returns free pages
/// from every arena. It runs a moment after the swap, when the last query batch holding the
/// old snapshot is done, on a thread of its own (the query path never allocates, so it never
/// waits on the arena locks this takes).
enum FreedMemory {
    private static let queue = DispatchQueue(label: "tdn.memory", qos: .utility)

    /// Large blocks (a snapshot's tables, a zone's arrays) get pages of their own: freed with
    /// the snapshot that owns them, they go straight back to the system.
    static func configure() { _ = tdn_fix_mmap_threshold(256 << 10) }

    /// Trims soon after a swap, and once more a few seconds later for what a busy machine
    /// freed late (a query batch or a status request still holding the old snapshot).
    static func release() {
        for delay in [0.5, 3.0] {
            queue.asyncAfter(deadline: .now() + delay) { _ = tdn_release_free_memory() }
        }
    }
}
