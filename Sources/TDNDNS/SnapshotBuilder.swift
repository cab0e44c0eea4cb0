/// Compiles checked zones into the zone part of a snapshot (`ZoneData`): every answer the zones
/// can give is encoded here, once, so that the query path only looks up a name and copies bytes.
public struct SnapshotBuilder {
    /// Where a name leads within the served zones (the control-plane form of the lookup).
    enum Resolution {
        case node(DomainName)
        case wildcard(DomainName)
        case referral(cut: DomainName)
        case nxdomain(zone: Int)
        case outOfZone
    }

    struct NodeInfo {
        var zone: Int
        var rrsets: [RecordType: RRset]
        /// The topmost delegation at or above this name inside its zone.
        var cut: DomainName?
    }

    private let zones: [Zone]
    private let steeredNameList: [DomainName]
    private var steeredNames: [DomainName: Int] = [:]
    var info: [DomainName: NodeInfo] = [:]
    private var table = TemplateTableBuilder()
    /// How many CNAMEs an answer follows before it stops (RFC 1034 §3.6.2 asks for a bound).
    static let chainLimit = 8

    /// Compiles the zones and, when given, the steered names (model hostnames) with their
    /// answers: both parts of a snapshot at once.
    public static func build(_ zones: [Zone], steering: SteeringTable = SteeringTable()) -> Snapshot {
        let zone = zoneData(zones, steeredNames: steering.names.map(\.name))
        return Snapshot(zone: zone, steering: SteeringBuilder.build(steering, zone: zone))
    }

    /// The zone part alone; `steeredNames` become empty nodes that refer to the steering part
    /// by their position in this list.
    public static func zoneData(_ zones: [Zone], steeredNames: [DomainName] = []) -> ZoneData {
        var builder = SnapshotBuilder(zones: zones, steeredNames: steeredNames)
        return builder.make()
    }

    /// Why steered names cannot be served from these zones (outside every zone, beside zone
    /// data, or below a delegation); empty when all can.
    public static func conflicts(_ zones: [Zone], steering: SteeringTable) -> [String] {
        conflicts(zones, steeredNames: steering.names.map(\.name))
    }

    public static func conflicts(_ zones: [Zone], steeredNames: [DomainName]) -> [String] {
        let builder = SnapshotBuilder(zones: zones, steeredNames: [])
        var problems: [String] = []
        for name in steeredNames {
            guard builder.zoneIndex(for: name) != nil else {
                problems.append("\(name) is in no zone we serve")
                continue
            }
            switch builder.resolve(name) {
            case .node(let found) where !(builder.info[found]?.rrsets.isEmpty ?? true):
                problems.append("\(name) also has records in \(builder.zones[builder.info[found]!.zone].file)")
            case .referral(let cut):
                problems.append("\(name) is below the delegation \(cut)")
            default:
                break
            }
        }
        return problems
    }

    private init(zones: [Zone], steeredNames: [DomainName]) {
        self.zones = zones
        self.steeredNameList = steeredNames
        let origins = zones.map { $0.origin.lowercased }
        for (index, zone) in zones.enumerated() {
            let apex = zone.origin.lowercased
            for (owner, rrsets) in zone.rrsets {
                // A name inside a deeper zone we also serve belongs to that zone.
                if origins.contains(where: {
                    $0 != apex && $0.labelCount > apex.labelCount && owner.isSubdomain(of: $0)
                }) {
                    continue
                }
                info[owner] = NodeInfo(zone: index, rrsets: rrsets, cut: nil)
                var ancestor = owner.parent
                while let name = ancestor, name.isSubdomain(of: apex) {
                    if info[name] == nil { info[name] = NodeInfo(zone: index, rrsets: [:], cut: nil) }
                    ancestor = name.parent
                }
            }
        }
        // Steered names become empty nodes of their zone (unless they clash with zone data).
        for (index, steered) in steeredNameList.enumerated() {
            let name = steered.lowercased
            guard let zone = zoneIndex(for: name), info[name]?.rrsets.isEmpty ?? true else { continue }
            self.steeredNames[name] = index
            if info[name] == nil { info[name] = NodeInfo(zone: zone, rrsets: [:], cut: nil) }
            var ancestor = name.parent
            while let parent = ancestor, parent.isSubdomain(of: zones[zone].origin) {
                if info[parent] == nil { info[parent] = NodeInfo(zone: zone, rrsets: [:], cut: nil) }
                ancestor = parent.parent
            }
        }
        for (name, node) in info {
            let apex = zones[node.zone].origin.lowercased
            var cut: DomainName? = nil
            var walk: DomainName? = name
            while let current = walk, current != apex {
                if info[current]?.rrsets[.ns] != nil { cut = current }
                walk = current.parent
            }
            info[name]?.cut = cut
        }
    }

    func zoneIndex(for name: DomainName) -> Int? { Self.zoneIndex(for: name, in: zones) }

    /// The deepest of `zones` that `name` is in.
    static func zoneIndex(for name: DomainName, in zones: [Zone]) -> Int? {
        zones.indices.filter { name.isSubdomain(of: zones[$0].origin) }
            .max(by: { zones[$0].origin.labelCount < zones[$1].origin.labelCount })
    }

    func resolve(_ name: DomainName) -> Resolution {
        let name = name.lowercased
        guard let zone = zoneIndex(for: name) else { return .outOfZone }
        if let node = info[name] {
            if let cut = node.cut { return .referral(cut: cut) }
            return .node(name)
        }
        var encloser = name.parent
        while let candidate = encloser, info[candidate] == nil { encloser = candidate.parent }
        guard let closest = encloser, let node = info[closest] else { return .nxdomain(zone: zone) }
        if let cut = node.cut { return .referral(cut: cut) }
        if let wildcard = try? closest.prepending(label: [UInt8(ascii: "*")]), info[wildcard] != nil {
            return .wildcard(wildcard)
        }
        return .nxdomain(zone: zone)
    }

    // MARK: - Sections

    private func negativeSOA(_ zone: Int) -> Placed { Self.negativeSOA(zones[zone]) }

    /// The SOA of a negative answer, with the zone's negative TTL (RFC 2308 §3).
    static func negativeSOA(_ zone: Zone) -> Placed {
        var soa = zone.soa
        soa.ttl = zone.negativeTTL
        return Placed(owner: .name(zone.origin), rrset: soa)
    }

    /// A and AAAA for the targets of NS, MX and SRV records that we hold (RFC 1034 §4.3.2 step 6).
    private func addresses(for rrsets: [RRset], excluding: Set<DomainName> = []) -> [Placed] {
        var seen = excluding
        var placed: [Placed] = []
        for rrset in rrsets {
            for target in rrset.additionalTargets where seen.insert(target.lowercased).inserted {
                guard let node = info[target.lowercased] else { continue }
                for type in [RecordType.a, .aaaa] {
                    if let set = node.rrsets[type] { placed.append(Placed(owner: .name(set.owner), rrset: set)) }
                }
            }
        }
        return placed
    }

    /// The answer for `qtype` at a name with `rrsets`, following an in-zone CNAME chain.
    private func answer(
        owner: Owner, ownerName: DomainName, rrsets: [RecordType: RRset], qtype: RecordType, base: DomainName, zone: Int
    ) -> TemplateSpec {
        var spec = TemplateSpec(base: base)
        if let set = rrsets[qtype] {
            spec.answer = [Placed(owner: owner, rrset: set)]
            spec.additional = addresses(for: [set])
            return spec
        }
        guard let cname = rrsets[.cname] else {
            spec.authority = [negativeSOA(zone)]
            return spec
        }
        spec.answer = [Placed(owner: owner, rrset: cname)]
        var visited: Set<DomainName> = [ownerName.lowercased]
        var target = cname.cnameTarget
        for _ in 0..<Self.chainLimit {
            guard let name = target, visited.insert(name.lowercased).inserted else { break }
            let next: [RecordType: RRset]
            let nextZone: Int
            switch resolve(name) {
            case .node(let found):
                next = info[found]!.rrsets
                nextZone = info[found]!.zone
            case .wildcard(let source):
                next = info[source]!.rrsets.mapValues {
                    var set = $0
                    set.owner = name
                    return set
                }
                nextZone = info[source]!.zone
            case .nxdomain(let zone):
                // RFC 6604: the RCODE describes the last name in the chain.
                spec.rcode = .nxDomain
                spec.authority = [negativeSOA(zone)]
                return spec
            case .referral, .outOfZone:
                return spec
            }
            if let set = next[qtype] {
                spec.answer.append(Placed(owner: .name(name), rrset: set))
                spec.additional = addresses(for: [set])
                return spec
            }
            guard let more = next[.cname] else {
                spec.authority = [negativeSOA(nextZone)]
                return spec
            }
            spec.answer.append(Placed(owner: .name(name), rrset: more))
            target = more.cnameTarget
        }
        return spec
    }

    /// The types a CNAME chain from `rrsets` ends in (each gets its own template).
    private func chainEndTypes(_ rrsets: [RecordType: RRset]) -> [RecordType] {
        var target = rrsets[.cname]?.cnameTarget
        var visited: Set<DomainName> = []
        for _ in 0..<Self.chainLimit {
            guard let name = target, visited.insert(name.lowercased).inserted else { return [] }
            let next: [RecordType: RRset]
            switch resolve(name) {
            case .node(let found): next = info[found]!.rrsets
            case .wildcard(let source): next = info[source]!.rrsets
            default: return []
            }
            guard let cname = next[.cname] else { return Array(next.keys) }
            target = cname.cnameTarget
        }
        return []
    }

    /// RFC 8482 §4.2: ANY gets one RRset (the CNAME where there is one).
    private func anyAnswer(owner: Owner, rrsets: [RecordType: RRset], base: DomainName, zone: Int) -> TemplateSpec {
        var spec = TemplateSpec(base: base)
        if let set = rrsets[.cname] ?? rrsets.keys.sorted().first.flatMap({ rrsets[$0] }) {
            spec.answer = [Placed(owner: owner, rrset: set)]
        } else {
            spec.authority = [negativeSOA(zone)]
        }
        return spec
    }

    private func referral(cut: DomainName) -> TemplateSpec {
        let node = info[cut]!
        let ns = node.rrsets[.ns]!
        var spec = TemplateSpec(base: cut)
        spec.authoritative = false
        spec.isReferral = true
        spec.authority = [Placed(owner: .name(ns.owner), rrset: ns)]
        spec.additional = addresses(for: [ns])
        return spec
    }

    // MARK: - Encoding

    private mutating func add(_ spec: TemplateSpec, key: String? = nil) -> Int32 { table.add(spec, key: key) }

    /// Templates for each type at a name plus its default and ANY templates.
    private mutating func answerSet(
        owner: Owner, ownerName: DomainName, rrsets: [RecordType: RRset], base: DomainName, zone: Int
    )
        -> (types: [(UInt16, Int32)], fallback: Int32, any: Int32)
    {
        var types: [(UInt16, Int32)] = []
        var wanted = Set(rrsets.keys)
        if rrsets[.cname] != nil { wanted.formUnion(chainEndTypes(rrsets)) }
        for type in wanted.sorted() {
            let spec = answer(owner: owner, ownerName: ownerName, rrsets: rrsets, qtype: type, base: base, zone: zone)
            types.append((type.rawValue, add(spec)))
        }
        // A type nobody holds: NODATA, or the CNAME chain ending in NODATA or NXDOMAIN.
        let other = answer(
            owner: owner, ownerName: ownerName, rrsets: rrsets, qtype: RecordType(0), base: base, zone: zone)
        let fallback = add(other)
        let any = add(anyAnswer(owner: owner, rrsets: rrsets, base: base, zone: zone))
        return (types, fallback, any)
    }

    private mutating func make() -> ZoneData {
        var nodes: [Node] = []
        var names: [UInt8] = []
        var typeKeys: [UInt16] = []
        var typeTemplates: [Int32] = []
        let ordered = info.keys.sorted { $0.wire.lexicographicallyPrecedes($1.wire) }
        var indexOf: [DomainName: Int32] = [:]
        for name in ordered { indexOf[name] = Int32(indexOf.count) }

        for name in ordered {
            let node = info[name]!
            let wire = name.wire
            var entry = Node(
                nameStart: UInt32(names.count), nameLength: UInt16(wire.count),
                hash: wire.withUnsafeBufferPointer { Snapshot.hash($0.baseAddress!, $0.count) },
                zone: Int32(node.zone), answers: .none, referralTemplate: -1, dsTemplate: -1, wildcardChild: -1,
                synthesised: .none)
            names += wire
            if let wildcard = try? name.prepending(label: [UInt8(ascii: "*")]), let child = indexOf[wildcard] {
                entry.wildcardChild = child
            }
            if let index = steeredNames[name], node.cut == nil {
                entry.steering = Int32(index)
            }
            if let cut = node.cut {
                entry.referralTemplate = add(referral(cut: cut), key: "referral \(cut)")
                if cut == name {
                    // RFC 4035 §3.1.4.1: DS lives on the parent side of the cut.
                    let parentSide = node.rrsets.filter { $0.key == .ds }
                    let spec = answer(
                        owner: .queryName, ownerName: name, rrsets: parentSide, qtype: .ds, base: name, zone: node.zone)
                    entry.dsTemplate = add(spec)
                }
            } else {
                /// Appends a name's per-type templates to the flat tables; returns where they start.
                func append(_ set: (types: [(UInt16, Int32)], fallback: Int32, any: Int32)) -> TypeAnswers {
                    let start = UInt32(typeKeys.count)
                    typeKeys += set.types.map(\.0)
                    typeTemplates += set.types.map(\.1)
                    return TypeAnswers(
                        start: start, count: UInt16(set.types.count), fallback: set.fallback, any: set.any)
                }
                entry.answers = append(
                    answerSet(owner: .queryName, ownerName: name, rrsets: node.rrsets, base: name, zone: node.zone))
                if name.isWildcard, let closest = name.parent {
                    // The same data again, encoded for names the wildcard covers (base: its parent).
                    entry.synthesised = append(
                        answerSet(
                            owner: .queryName, ownerName: name, rrsets: node.rrsets, base: closest, zone: node.zone))
                }
            }
            nodes.append(entry)
        }

        var nxdomain: [Int32] = []
        for (index, zone) in zones.enumerated() {
            var spec = TemplateSpec(base: zone.origin)
            spec.rcode = .nxDomain
            spec.authority = [negativeSOA(index)]
            nxdomain.append(add(spec))
        }

        var capacity = 16
        while capacity < nodes.count * 2 { capacity *= 2 }
        var slots = [Int32](repeating: -1, count: capacity)
        for (index, node) in nodes.enumerated() {
            var slot = Int(node.hash) & (capacity - 1)
            while slots[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Int32(index)
        }
        return ZoneData(
            nodes: nodes, slots: slots, names: names, typeKeys: typeKeys, typeTemplates: typeTemplates,
            table: table, nxdomainTemplates: nxdomain, zones: zones, steeredNames: steeredNameList,
            steeredZones: steeredNameList.map { zoneIndex(for: $0.lowercased) ?? -1 })
    }
}

/// Encodes templates into one table, reusing those given a key.
struct TemplateTableBuilder {
    private var templates: [Template] = []
    private var bodies: [UInt8] = []
    private var relocations: [UInt16] = []
    private var cache: [String: Int32] = [:]

    mutating func add(_ spec: TemplateSpec, key: String? = nil) -> Int32 {
        if let key, let cached = cache[key] { return cached }
        var encoder = TemplateEncoder(base: spec.base)
        for placed in spec.answer { encoder.write(placed) }
        for placed in spec.authority { encoder.write(placed) }
        let minimalLength = encoder.body.count
        let minimalRelocations = encoder.relocations.count
        for placed in spec.additional { encoder.write(placed) }
        let count = { (placed: [Placed]) in UInt16(placed.reduce(0) { $0 + $1.rrset.rdatas.count }) }
        let template = Template(
            bodyStart: UInt32(bodies.count), bodyLength: UInt16(encoder.body.count),
            minimalLength: UInt16(minimalLength),
            relocationStart: UInt32(relocations.count), relocationCount: UInt16(encoder.relocations.count),
            minimalRelocationCount: UInt16(minimalRelocations),
            answerCount: count(spec.answer), authorityCount: count(spec.authority),
            additionalCount: count(spec.additional), baseLength: UInt16(spec.base.wire.count),
            rcode: UInt8(spec.rcode.rawValue), authoritative: spec.authoritative, isReferral: spec.isReferral)
        bodies += encoder.body
        relocations += encoder.relocations
        templates.append(template)
        let index = Int32(templates.count - 1)
        if let key { cache[key] = index }
        return index
    }

    init() {}

    /// Starts with every template of `source`, at the same indices.
    init(copying source: TemplateTable) {
        templates = Array(source.templates[0..<source.counts.templates])
        bodies = Array(source.bodies[0..<source.counts.bodies])
        relocations = Array(source.relocations[0..<source.counts.relocations])
    }

    func make(in arena: Arena) -> TemplateTable {
        TemplateTable(templates: templates, bodies: bodies, relocations: relocations, in: arena)
    }
}
