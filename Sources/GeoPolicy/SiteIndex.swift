/// The policy's sites laid out for the planner: numbers by site index instead of strings, the
/// latency map as a dictionary, and, per (model, allowed jurisdictions), the eligible sites in a
/// k-d tree over their positions on the globe, so that a decision reads only the sites near the
/// client instead of all of them. Built once per policy; the groups on first use.
final class SiteIndex {
    let policy: Policy
    let sites: [Site]
    /// Each site's place in the order of site ids (`String <`): the last tie-break of the ranking.
    let rank: [Int32]
    let penalty: [Double]
    let cost: [Double]
    let coordinates: [Coordinates]
    let ipv4Count: [Int]
    let ids: [String]
    let weights: [Int]
    /// Addresses by site, so that decisions never copy a whole `Site`.
    let ipv4: [[[UInt8]]]
    let ipv6: [[[UInt8]]]
    let ipv6Count: [Int]
    /// Unit vectors of the sites' coordinates (x, y, z).
    let points: [(Double, Double, Double)]
    let indexOf: [String: Int32]
    /// The latency map: from (country or network name) → [(site, rtt)], the first entry of each
    /// (from, site) pair (as the linear search of `Decider.rtt` finds it).
    let latency: [String: [(site: Int32, rtt: Double)]]
    private var groups: [GroupKey: EligibleSites] = [:]
    /// The groups made so far, by `EligibleSites.id`.
    private(set) var groupList: [EligibleSites] = []
    /// The tree nodes of all groups so far (each group numbers its own from `nodeBase`).
    private(set) var nodeCount = 0
    /// Groups by their members (groups of different models often have the same sites), and
    /// the walk keys of one health state (`EligibleSites.walkKey`).
    private var memberClasses: [[Int32]: Int] = [:]
    private var walkKeys: [WalkKey: Int] = [:]
    private var walkKeysEpoch = -1

    struct WalkKey: Hashable {
        var members: Int
        /// Members that are up but report a model list without the group's model.
        var without: [Int32]
    }

    /// A number per (member class, candidacy) for health state `epoch`.
    func walkKey(members: Int, without: [Int32], epoch: Int) -> Int {
        if walkKeysEpoch != epoch {
            walkKeys.removeAll(keepingCapacity: true)
            walkKeysEpoch = epoch
        }
        let key = WalkKey(members: members, without: without)
        if let known = walkKeys[key] { return known }
        walkKeys[key] = walkKeys.count
        return walkKeys.count - 1
    }

    struct GroupKey: Hashable {
        var model: Int
        var allowed: [String]?
    }

    init(policy: Policy) {
        self.policy = policy
        let sites = policy.sites
        self.sites = sites
        var indexOf: [String: Int32] = [:]
        for (index, site) in sites.enumerated() { indexOf[site.id] = Int32(index) }
        self.indexOf = indexOf
        var rank = [Int32](repeating: 0, count: sites.count)
        for (position, index) in sites.indices.sorted(by: { sites[$0].id < sites[$1].id }).enumerated() {
            rank[index] = Int32(position)
        }
        self.rank = rank
        penalty = sites.map { policy.tierPenaltyMilliseconds[$0.tier] ?? 0 }
        cost = sites.map(\.cost)
        coordinates = sites.map(\.coordinates)
        ipv4Count = sites.map(\.ipv4.count)
        ids = sites.map(\.id)
        weights = sites.map(\.weight)
        ipv4 = sites.map(\.ipv4)
        ipv6 = sites.map(\.ipv6)
        ipv6Count = sites.map(\.ipv6.count)
        points = sites.map { SiteIndex.unitVector($0.coordinates) }
        var latency: [String: [(site: Int32, rtt: Double)]] = [:]
        var seen: Set<[String]> = []
        for entry in policy.latency {
            guard let site = indexOf[entry.site], seen.insert([entry.from, entry.site]).inserted else { continue }
            latency[entry.from, default: []].append((site, entry.rttMilliseconds))
        }
        self.latency = latency
    }

    static func unitVector(_ point: Coordinates) -> (Double, Double, Double) {
        let radians = Double.pi / 180
        let lat = point.latitude * radians
        let lon = point.longitude * radians
        return (cosine(lat) * cosine(lon), cosine(lat) * sine(lon), sine(lat))
    }

    /// The sites that may serve `model` to clients allowed `allowed` (nil: any jurisdiction).
    func group(model: Int, allowed: Set<String>?) -> EligibleSites {
        let key = GroupKey(model: model, allowed: allowed.map { $0.sorted() })
        if let known = groups[key] { return known }
        let served = policy.models[model]
        let members = sites.indices.filter { index in
            Decider.serves(sites[index], served) && (allowed?.contains(sites[index].jurisdiction) ?? true)
        }.map { Int32($0) }
        let memberClass = memberClasses[members] ?? memberClasses.count
        memberClasses[members] = memberClass
        let made = EligibleSites(
            members: members, index: self, model: served.name, id: groupList.count, nodeBase: nodeCount,
            memberClass: memberClass)
        groups[key] = made
        groupList.append(made)
        nodeCount += made.tree.nodes.count
        return made
    }
}

/// The sites eligible for one (model, allowed jurisdictions): a membership table, a k-d tree
/// for clients with coordinates, and a fixed order for clients without (every site then scores
/// 250 ms plus its tier penalty).
final class EligibleSites {
    let id: Int
    /// The number of this group's first tree node among all groups' (`SiteIndex.nodeCount`).
    let nodeBase: Int
    let model: String
    let members: [Int32]
    /// Groups with the same members have the same number.
    let memberClass: Int
    let isMember: [Bool]
    private unowned let index: SiteIndex
    /// How many members have IPv4 and IPv6 addresses: once all of them are read, reading on
    /// cannot add an address of that family.
    let withIPv4: Int
    let withIPv6: Int
    /// Members by (250 + penalty, cost, rank).
    let unlocated: [Int32]
    let tree: KDTree

    /// Figures of one health state (`SiteStates.epoch`), for when no member can serve: how many
    /// can (up, with the model), how many are down, the down members that were up last, and the
    /// unsettled members.
    private(set) var epoch = -1
    private(set) var usableCount = 0
    private(set) var downCount = 0
    private(set) var latest: [Int32] = []
    private(set) var unsettled: [Int32] = []
    /// Per tree node, for the same health state: how many sites below it are candidates (up,
    /// with the model), and how many are candidates or unsettled. A walk reads a node without
    /// candidates without ranking its sites, and one without either as a whole (one input).
    private(set) var candidatesBelow: [Int32] = []
    private(set) var liveBelow: [Int32] = []
    /// For the same health state: groups with the same key have the same members and the same
    /// candidates, so a walk over one is a walk over the other.
    private(set) var walkKey = -1

    /// Whether `state` makes a member a candidate: up and, if it reports models, with this one.
    @inline(__always)
    func isCandidate(_ state: SiteHealth) -> Bool { state.up && (state.models?.contains(model) ?? true) }

    func refresh(_ states: SiteStates) {
        guard epoch != states.epoch else { return }
        epoch = states.epoch
        usableCount = 0
        downCount = 0
        latest = []
        unsettled = []
        candidatesBelow = tree.counts { isCandidate(states.states[Int($0)]) }
        liveBelow = tree.counts { isCandidate(states.states[Int($0)]) || states.states[Int($0)].unsettled }
        var without: [Int32] = []
        var latestUp: Double? = nil
        for member in members {
            let state = states.states[Int(member)]
            if state.unsettled { unsettled.append(member) }
            if !state.up {
                downCount += 1
                if let up = state.lastUp {
                    if latestUp == nil || up > latestUp! {
                        latestUp = up
                        latest = [member]
                    } else if up == latestUp {
                        latest.append(member)
                    }
                }
            } else if isCandidate(state) {
                usableCount += 1
            } else {
                without.append(member)
            }
        }
        walkKey = index.walkKey(members: memberClass, without: without, epoch: states.epoch)
    }

    init(members: [Int32], index: SiteIndex, model: String, id: Int, nodeBase: Int, memberClass: Int) {
        self.id = id
        self.nodeBase = nodeBase
        self.memberClass = memberClass
        self.index = index
        self.model = model
        self.members = members
        var isMember = [Bool](repeating: false, count: index.sites.count)
        for member in members { isMember[Int(member)] = true }
        self.isMember = isMember
        withIPv4 = members.filter { !index.sites[Int($0)].ipv4.isEmpty }.count
        withIPv6 = members.filter { !index.sites[Int($0)].ipv6.isEmpty }.count
        unlocated = members.sorted {
            (250 + index.penalty[Int($0)], index.sites[Int($0)].cost, index.rank[Int($0)])
                < (250 + index.penalty[Int($1)], index.sites[Int($1)].cost, index.rank[Int($1)])
        }
        tree = KDTree(members: members, index: index)
    }
}

/// A k-d tree over unit vectors with buckets of a few sites at the leaves. A node's box gives a
/// lower bound of the great-circle distance to anything inside it (the chord to the box), so a
/// best-first walk yields sites in exact score order while reading only the nearest.
struct KDTree {
    struct Node {
        var low: (Double, Double, Double)
        var high: (Double, Double, Double)
        /// Children, or -1 for a leaf holding `order[start..<end]`.
        var left: Int32
        var right: Int32
        var start: Int32
        var end: Int32
        var minimumPenalty: Double
        /// How many sites below have IPv4 and IPv6 addresses.
        var ipv4Below: Int32
        var ipv6Below: Int32
    }

    private(set) var nodes: [Node] = []
    private(set) var order: [Int32]
    /// Each node's parent (-1 for the root), and each member's leaf: a node's inputs change
    /// when a site on the path from its leaf up changes.
    private(set) var parent: [Int32] = []
    private(set) var leafOf: [Int32: Int32] = [:]
    static let bucket = 8

    init(members: [Int32], index: SiteIndex) {
        order = members
        guard !members.isEmpty else { return }
        _ = build(0, members.count, index)
        parent = [Int32](repeating: -1, count: nodes.count)
        for (id, node) in nodes.enumerated() {
            if node.left < 0 {
                for position in Int(node.start)..<Int(node.end) { leafOf[order[position]] = Int32(id) }
            } else {
                parent[Int(node.left)] = Int32(id)
                parent[Int(node.right)] = Int32(id)
            }
        }
    }

    /// The nodes with `site` below them, from its leaf to the root (none if not a member).
    func path(to site: Int32) -> [Int32] {
        guard var node = leafOf[site] else { return [] }
        var path: [Int32] = []
        while node >= 0 {
            path.append(node)
            node = parent[Int(node)]
        }
        return path
    }

    private mutating func build(_ start: Int, _ end: Int, _ index: SiteIndex) -> Int32 {
        var low = (Double.infinity, Double.infinity, Double.infinity)
        var high = (-Double.infinity, -Double.infinity, -Double.infinity)
        var penalty = Double.infinity
        var ipv4: Int32 = 0
        var ipv6: Int32 = 0
        for position in start..<end {
            let site = Int(order[position])
            let p = index.points[site]
            low = (min(low.0, p.0), min(low.1, p.1), min(low.2, p.2))
            high = (max(high.0, p.0), max(high.1, p.1), max(high.2, p.2))
            penalty = min(penalty, index.penalty[site])
            if index.ipv4Count[site] > 0 { ipv4 += 1 }
            if index.ipv6Count[site] > 0 { ipv6 += 1 }
        }
        let id = Int32(nodes.count)
        nodes.append(
            Node(
                low: low, high: high, left: -1, right: -1, start: Int32(start), end: Int32(end),
                minimumPenalty: penalty, ipv4Below: ipv4, ipv6Below: ipv6))
        guard end - start > Self.bucket else { return id }
        let spans = [high.0 - low.0, high.1 - low.1, high.2 - low.2]
        let axis = spans.indices.max { spans[$0] < spans[$1] }!
        func coordinate(_ site: Int32) -> Double {
            let p = index.points[Int(site)]
            return axis == 0 ? p.0 : axis == 1 ? p.1 : p.2
        }
        order[start..<end].sort { coordinate($0) < coordinate($1) }
        let middle = (start + end) / 2
        let left = build(start, middle, index)
        let right = build(middle, end, index)
        nodes[Int(id)].left = left
        nodes[Int(id)].right = right
        return id
    }

    /// How many sites below each node pass `test` (children follow their parent in `nodes`,
    /// so one pass from the end sums them).
    func counts(_ test: (Int32) -> Bool) -> [Int32] {
        var counts = [Int32](repeating: 0, count: nodes.count)
        for id in nodes.indices.reversed() {
            let node = nodes[id]
            if node.left < 0 {
                var count: Int32 = 0
                for position in Int(node.start)..<Int(node.end) where test(order[position]) { count += 1 }
                counts[id] = count
            } else {
                counts[id] = counts[Int(node.left)] + counts[Int(node.right)]
            }
        }
        return counts
    }

    /// A lower bound of the score (2 + km / 100 + tier penalty) of any site below `node` for a
    /// client at unit vector `q`, a little low so that rounding can never hide a site.
    func bound(_ node: Int, _ q: (Double, Double, Double)) -> Double {
        let n = nodes[node]
        let dx = q.0 < n.low.0 ? n.low.0 - q.0 : q.0 > n.high.0 ? q.0 - n.high.0 : 0
        let dy = q.1 < n.low.1 ? n.low.1 - q.1 : q.1 > n.high.1 ? q.1 - n.high.1 : 0
        let dz = q.2 < n.low.2 ? n.low.2 - q.2 : q.2 > n.high.2 ? q.2 - n.high.2 : 0
        let chord = (dx * dx + dy * dy + dz * dz).squareRoot()
        let kilometres = 2 * 6371 * arcsine(min(1, chord / 2))
        return 2 + kilometres / 100 + n.minimumPenalty - 0.001
    }
}

/// A binary min-heap of what the best-first walk has still to read: sites with their exact
/// ranking key, tree nodes with a lower bound, and a cursor into a fixed order. Ties put nodes
/// and cursors before sites, so a site is read only when nothing unread can rank above it.
struct RankingHeap {
    struct Entry {
        var score: Double
        var cost: Double
        var rank: Int32
        var kind: Kind
        var value: Int32

        enum Kind: UInt8 {
            case site, node, cursor
        }

        @inline(__always)
        static func < (a: Entry, b: Entry) -> Bool {
            if a.score != b.score { return a.score < b.score }
            if a.cost != b.cost { return a.cost < b.cost }
            return a.rank < b.rank
        }
    }

    private(set) var entries: [Entry] = []

    var top: Entry? { entries.first }

    mutating func removeAll() { entries.removeAll(keepingCapacity: true) }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child] < entries[parent] else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry {
        let first = entries[0]
        let last = entries.removeLast()
        guard !entries.isEmpty else { return first }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < entries.count else { break }
            var child = left
            if left + 1 < entries.count && entries[left + 1] < entries[left] { child = left + 1 }
            guard entries[child] < entries[parent] else { break }
            entries.swapAt(child, parent)
            parent = child
        }
        return first
    }
}
