/// Model hostnames answered per client: the control plane's output in the form the query path
/// needs. `TDNDNS` knows nothing of geography: it gets prefixes with class numbers, and for each
/// steered name the answer of each class.
public struct SteeringTable: Sendable {
    /// One answer a steered name can give.
    public struct Answer: Hashable, Sendable {
        public enum Kind: Hashable, Sendable {
            /// A and AAAA records with these addresses (an empty family answers NODATA).
            case addresses
            /// NODATA for A and AAAA, with `ttl` as the SOA's negative TTL, so that a denial is
            /// cached briefly by resolvers that cache it for every client.
            case denied
            /// SERVFAIL.
            case serverFailure
        }
        public var kind: Kind
        public var ipv4: [[UInt8]]
        public var ipv6: [[UInt8]]
        public var ttl: UInt32
        /// The sites the addresses belong to: not served, only counted (`QueryStats`).
        public var sites: [String]

        public init(kind: Kind, ipv4: [[UInt8]] = [], ipv6: [[UInt8]] = [], ttl: UInt32, sites: [String] = []) {
            self.kind = kind
            self.ipv4 = ipv4
            self.ipv6 = ipv6
            self.ttl = ttl
            self.sites = sites
        }
    }

    /// Which location class each client address is in.
    public var locations = LocationTrie.empty
    public var classCount = 1
    /// Each steered name with the index into `answers` of every class.
    public var names: [(name: DomainName, answerOfClass: [Int32])] = []
    public var answers: [Answer] = []
    /// Optional: per answer, a key that names the same answer in the next table while
    /// `answerKeyEpoch` stays the same, so that `SteeringBuilder` can copy its encoding from the
    /// previous steering part instead of encoding it again. A key of -1: none (encoded anew).
    public var answerKeys: [Int32] = []
    public var answerKeyEpoch: UInt64 = 0
    /// Per steered name (parallel to `names`; may be empty): location classes answered per
    /// shard of their clients, each with the answer of every shard (`shardCount` of them). A
    /// client's shard is a hash of its /24 (IPv4) or /56 (IPv6), so that answer-share budgets
    /// can move part of a class's demand; a class whose shards all answer alike is one class.
    public var shardAnswers: [[Int32: [Int32]]] = []

    /// Shards per location class.
    public static let shardCount = 16
    /// The prefix a client's shard is taken from, and so the narrowest ECS scope of a class
    /// answered per shard: IPv4 and IPv6.
    public static let shardPrefix = (ipv4: 24, ipv6: 56)

    public init() {}

    /// The shard of a client address given as the tries read it (IPv4 in the top 32 bits of
    /// `high`): a multiplicative hash of its /24 or /56, 0 ..< `shardCount`.
    @inline(__always)
    public static func shard(high: UInt64, isIPv6: Bool) -> Int {
        let prefix = isIPv6 ? high >> UInt64(64 - shardPrefix.ipv6) : high >> UInt64(64 - shardPrefix.ipv4)
        return Int(((prefix &+ 1) &* 0x9E37_79B9_7F4A_7C15) >> 60)
    }
}

/// The address space cut into location classes, as two merged binary tries (IPv4, IPv6). It
/// depends on the geography only (operator networks and the geo database), so it is built once
/// per load; each health change relabels its leaves with answer classes (`AnswerTrie`).
public final class LocationTrie: Sendable {
    let v4: [Int32]
    let v6: [Int32]

    /// IPv4 networks (address, prefix length, class); a later entry overrides an earlier one
    /// where they overlap. Addresses in no entry are class 0. IPv6 networks as (high and low
    /// 64 bits, prefix length, class).
    public init(v4: [(UInt32, UInt8, Int32)], v6: [(UInt64, UInt64, UInt8, Int32)]) {
        var trie4 = PrefixTrieBuilder()
        for (address, length, location) in v4 {
            trie4.insert(high: UInt64(address) << 32, low: 0, length: Int(length), classID: location)
        }
        var trie6 = PrefixTrieBuilder()
        for (high, low, length, location) in v6 {
            trie6.insert(high: high, low: low, length: Int(length), classID: location)
        }
        self.v4 = trie4.merged()
        self.v6 = trie6.merged()
    }

    public static let empty = LocationTrie(v4: [], v6: [])

}

/// A binary trie over address bits whose leaves are classes. Siblings with the same class are
/// merged, so the depth of the leaf an address reaches is the widest prefix around it over which
/// the class, and so the answer, is the same: the ECS scope (RFC 7871 §7.2.1).
struct PrefixTrieBuilder {
    /// Children of node i at 2i and 2i+1: a node index, or -(class + 1) for a leaf.
    private(set) var children: [Int32] = [-1, -1]

    /// Sets every address under the prefix to `classID` (top `length` bits of `high`,`low`).
    mutating func insert(high: UInt64, low: UInt64, length: Int, classID: Int32) {
        let leaf = -(classID + 1)
        if length == 0 {
            children = [leaf, leaf]
            return
        }
        var node = 0
        for depth in 0..<length {
            let slot = 2 * node + PrefixTrieBuilder.bit(high, low, depth)
            if depth == length - 1 {
                children[slot] = leaf
                return
            }
            if children[slot] < 0 {
                // Split the leaf: both halves keep its class until the insert goes on below.
                let inherited = children[slot]
                let index = Int32(children.count / 2)
                children += [inherited, inherited]
                children[slot] = index
            }
            node = Int(children[slot])
        }
    }

    @inline(__always)
    static func bit(_ high: UInt64, _ low: UInt64, _ depth: Int) -> Int {
        depth < 64 ? Int((high >> UInt64(63 - depth)) & 1) : Int((low >> UInt64(127 - depth)) & 1)
    }

    /// A compact copy with equal-leaf siblings merged bottom-up and dropped subtrees gone. A
    /// whole space of one class comes back as a root whose two children are that leaf.
    func merged() -> [Int32] {
        var out: [Int32] = [0, 0]
        // Returns the compacted value of a slot (leaf, or index into `out`).
        func compact(_ value: Int32) -> Int32 {
            if value < 0 { return value }
            let left = compact(children[2 * Int(value)])
            let right = compact(children[2 * Int(value) + 1])
            if left < 0 && left == right { return left }
            let index = Int32(out.count / 2)
            out += [left, right]
            return index
        }
        out[0] = compact(children[0])
        out[1] = compact(children[1])
        return out
    }
}

/// The query path's form of a merged prefix trie: nodes of 16 entries (4 address bits per step),
/// one 64-byte cache line each. A walk is a chain of dependent loads, each new line a likely
/// miss; four bits per line instead of one make that chain a quarter as long. An entry is a
/// child node index, or a leaf: bit 31 set, the leaf's exact depth in bits 24–30 (the scope),
/// its class in bits 0–23.
enum StrideTrie {
    static let leafFlag: UInt32 = 0x8000_0000

    static func leaf(_ value: Int32, depth: Int) -> UInt32 {
        leafFlag | UInt32(depth) << 24 | UInt32(-value - 1)
    }
}
