/// One address family's answer trie, with what the next health change needs to rebuild only
/// what changed: the location trie (fixed per load) relabeled with answer classes and merged
/// (`binary`), then laid out 4 bits per step (`stride`, what the query path reads).
///
/// A health change moves some location classes to other answer classes. Only the location-trie
/// nodes with such a class below them can change: their merged form is computed again and
/// appended, every other node keeps its merged form and its stride node, which are never
/// modified once made (the root, node 0 of both, is rewritten). The lookups are exactly those of
/// a trie built from scratch; only the numbering of nodes differs. What is no longer reachable
/// stays until the arrays have doubled since the last build from scratch, which then happens.
struct AnswerTrie {
    /// The merged binary trie: children of node i at 2i and 2i+1, a node index or -(class + 1).
    private(set) var binary: [Int32] = [0, 0]
    /// Per location-trie node: its merged value (a leaf, or a node of `binary`).
    private var merged: [Int32] = []
    /// Stride nodes of 16 entries (`StrideTrie`), node 0 the root.
    private(set) var stride: [UInt32] = []
    /// Per node of `binary`: its stride node, or -1.
    private var strideOf: [Int32] = []
    private var freshBinary = 0
    private var freshStride = 0

    /// From scratch: `locations` (a merged location trie, children before parents) with every
    /// location class `c` labeled `classOf[c]` (classes outside the table count as class 0).
    init(locations: [Int32], classOf: [Int32]) {
        merged = [Int32](repeating: 0, count: locations.count / 2)
        binary.reserveCapacity(locations.count)
        mergeFromRoot(locations, classOf, dirty: nil)
        freshBinary = binary.count
        freshStride = stride.count
    }

    /// An empty placeholder (what a steering part keeps once the next one has taken its trie).
    init() {}

    /// Moves from the labels `old` to `new`, in place (the arrays are mutated, not copied: the
    /// caller holds the only reference).
    mutating func update(locations: [Int32], old: [Int32], new: [Int32]) {
        guard old.count == new.count, merged.count == locations.count / 2 else {
            self = AnswerTrie(locations: locations, classOf: new)
            return
        }
        let changed = zip(old, new).map { $0 != $1 }
        guard changed.contains(true) else { return }
        // Children come before parents in a merged trie, so one pass upward marks every node
        // with a changed class below it.
        var dirty = [Bool](repeating: false, count: locations.count / 2)
        func isDirty(_ value: Int32) -> Bool {
            if value < 0 {
                let location = Int(-value - 1)
                return changed[location < changed.count ? location : 0]
            }
            return dirty[Int(value)]
        }
        for node in 1..<max(1, locations.count / 2) {
            dirty[node] = isDirty(locations[2 * node]) || isDirty(locations[2 * node + 1])
        }
        if binary.count > 2 * freshBinary + 4096 || stride.count > 2 * freshStride + 4096 {
            self = AnswerTrie(locations: locations, classOf: new)
            return
        }
        mergeFromRoot(locations, new, dirty: dirty)
    }

    /// Merges from the root (only `dirty` nodes, when given) and lays the stride nodes out.
    private mutating func mergeFromRoot(_ locations: [Int32], _ classOf: [Int32], dirty: [Bool]?) {
        locations.withUnsafeBufferPointer { trie in
            classOf.withUnsafeBufferPointer { classOf in
                func root(_ dirty: UnsafeBufferPointer<Bool>?) {
                    let left = Self.merge(trie[0], trie, classOf, dirty, &binary, &merged)
                    let right = Self.merge(trie[1], trie, classOf, dirty, &binary, &merged)
                    binary[0] = left
                    binary[1] = right
                }
                if let dirty { dirty.withUnsafeBufferPointer { root($0) } } else { root(nil) }
            }
        }
        layOut()
    }

    /// The merged value of a location-trie slot; nodes without a changed class below them
    /// (`dirty` false) keep the value they had. With `dirty` nil every node is computed.
    private static func merge(
        _ value: Int32, _ trie: UnsafeBufferPointer<Int32>, _ classOf: UnsafeBufferPointer<Int32>,
        _ dirty: UnsafeBufferPointer<Bool>?, _ binary: inout [Int32], _ merged: inout [Int32]
    ) -> Int32 {
        if value < 0 {
            let location = Int(-value - 1)
            return -((location < classOf.count ? classOf[location] : classOf[0]) + 1)
        }
        if let dirty, !dirty[Int(value)] { return merged[Int(value)] }
        let left = merge(trie[2 * Int(value)], trie, classOf, dirty, &binary, &merged)
        let right = merge(trie[2 * Int(value) + 1], trie, classOf, dirty, &binary, &merged)
        let result: Int32
        if left < 0 && left == right {
            result = left
        } else {
            result = Int32(binary.count / 2)
            binary.append(left)
            binary.append(right)
        }
        merged[Int(value)] = result
        return result
    }

    /// Writes the root stride node again, and new stride nodes for new binary nodes.
    private mutating func layOut() {
        if stride.isEmpty { stride = [UInt32](repeating: 0, count: 16) }
        if strideOf.count < binary.count / 2 {
            strideOf.append(contentsOf: repeatElement(-1, count: binary.count / 2 - strideOf.count))
        }
        binary.withUnsafeBufferPointer { binary in
            Self.expand(&stride, &strideOf, 0, 0, 0, step: 0, prefix: 0, binary)
        }
    }

    /// Fills the entries of stride node `index` below binary node `current` (`step` levels
    /// under the node's top, at trie depth `depth` + `step`), entry by entry in order; a child
    /// at the fourth level is the stride node made for it before, or a new one.
    private static func expand(
        _ stride: inout [UInt32], _ strideOf: inout [Int32], _ index: Int, _ current: Int, _ depth: Int, step: Int,
        prefix: Int, _ binary: UnsafeBufferPointer<Int32>
    ) {
        for bit in 0..<2 {
            let child = binary[2 * current + bit]
            let next = step + 1
            let path = prefix << 1 | bit
            if child < 0 {
                let entry = StrideTrie.leaf(child, depth: depth + next)
                let start = 16 * index + (path << (4 - next))
                for slot in start..<start + (1 << (4 - next)) { stride[slot] = entry }
            } else if next == 4 || depth + next == 128 {
                var made = Int(strideOf[Int(child)])
                if made < 0 {
                    made = stride.count / 16
                    stride.append(contentsOf: repeatElement(0, count: 16))
                    strideOf[Int(child)] = Int32(made)
                    expand(&stride, &strideOf, made, Int(child), depth + next, step: 0, prefix: 0, binary)
                }
                stride[16 * index + (path << (4 - next))] = UInt32(made)
            } else {
                expand(&stride, &strideOf, index, Int(child), depth, step: next, prefix: path, binary)
            }
        }
    }

    /// The stride nodes in 64-byte-aligned memory of their own, for the query path.
    func aligned() -> UnsafeMutableBufferPointer<UInt32> {
        let buffer = UnsafeMutableBufferPointer<UInt32>(
            start: UnsafeMutableRawPointer.allocate(byteCount: stride.count * 4, alignment: 64).bindMemory(
                to: UInt32.self, capacity: stride.count),
            count: stride.count)
        _ = buffer.initialize(from: stride)
        return buffer
    }
}
