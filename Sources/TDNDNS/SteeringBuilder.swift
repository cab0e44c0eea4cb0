/// Compiles a `SteeringTable` into the steering part of a snapshot for a zone part: answer
/// classes, the answer tries (`AnswerTrie`), and every steered answer encoded. Reads the
/// zone part only for the zones' SOAs; builds nothing of it.
public enum SteeringBuilder {
    /// With `previous` (the steering part being replaced), what has not changed is reused: the
    /// tries when every location class keeps its answer class, and the encoding of every answer
    /// it had (by `SteeringTable.answerKeys`) when the zone part is the same.
    public static func build(_ steering: SteeringTable, zone: ZoneData, previous: SteeringData? = nil) -> SteeringData {
        // Location classes whose answers are the same for every steered name are one answer
        // class: the trie then joins more neighbours, so it is smaller (fewer cache misses per
        // lookup) and its scopes are wider, yet never wider than the range over which every
        // answer is the same.
        let classCount = max(1, steering.classCount)
        var answerClassOf = [Int32](repeating: 0, count: classCount)
        var rows: [[Int32]] = []
        var rowIndex: [[Int32]: Int32] = [:]
        // A class answered per shard (`SteeringTable.shardAnswers`) whose shards differ is a
        // split class: a row of its own, and the rows of its shards in `shardRows`.
        var splitOf: [Int32] = []
        var shardRows: [Int32] = []
        var splitIndex: [[Int32]: Int32] = [:]
        func rowID(_ row: [Int32]) -> Int32 {
            if let known = rowIndex[row] { return known }
            let id = Int32(rows.count)
            rowIndex[row] = id
            rows.append(row)
            splitOf.append(-1)
            return id
        }
        for location in 0..<classCount {
            let row = steering.names.map {
                location < $0.answerOfClass.count ? $0.answerOfClass[location] : ($0.answerOfClass.first ?? 0)
            }
            let perShard = steering.names.indices.map { name in
                name < steering.shardAnswers.count ? steering.shardAnswers[name][Int32(location)] : nil
            }
            // Class 0 (addresses in no network, and clients with no address) is never split:
            // it is answer class 0, the tries' default.
            guard location > 0, perShard.contains(where: { $0 != nil }) else {
                answerClassOf[location] = rowID(row)
                continue
            }
            let shards = (0..<SteeringTable.shardCount).map { shard in
                rowID(
                    row.indices.map { name in
                        perShard[name].map { shard < $0.count ? $0[shard] : row[name] } ?? row[name]
                    })
            }
            if Set(shards).count == 1 {
                answerClassOf[location] = shards[0]
            } else if let known = splitIndex[shards] {
                answerClassOf[location] = known
            } else {
                let id = Int32(rows.count)
                rows.append(rows[Int(shards[0])])
                splitOf.append(Int32(shardRows.count))
                shardRows += shards
                splitIndex[shards] = id
                answerClassOf[location] = id
            }
        }
        // Addresses in no network are location class 0, numbered first: answer class 0, the
        // tries' default.
        var table = TemplateTableBuilder()
        // The previous part's encodings by answer key, when they fit this zone part: its whole
        // table is taken over (one copy) and answers it had point at their old templates. Once
        // the table holds over twice what the answers need, it is encoded afresh.
        var reusable: [Int32] = []
        var reusableStart: [Int: Int32] = [:]
        if let previous, previous.basis.zoneGeneration == zone.generation,
            previous.basis.answerKeyEpoch == steering.answerKeyEpoch,
            !steering.answerKeys.isEmpty, !previous.basis.answerKeys.isEmpty,
            previous.table.counts.templates <= 6 * steering.answers.count + 4096
        {
            table = TemplateTableBuilder(copying: previous.table)
            reusable = [Int32](repeating: -1, count: Int(previous.basis.answerKeys.max() ?? 0) + 1)
            for (index, key) in previous.basis.answerKeys.enumerated() where key >= 0 {
                reusable[Int(key)] = Int32(index)
            }
            for (index, zoneIndex) in zone.steeredZones.enumerated()
            where zoneIndex >= 0 && index < previous.steeredTemplateStarts.count {
                reusableStart[zoneIndex] = previous.steeredTemplateStarts[index]
            }
        }
        var steeredRows: [Int32] = []
        var classAnswers: [Int32] = []
        var templateStarts: [Int32] = []
        var templates: [Int32] = []
        var zoneTemplateStart: [Int: Int32] = [:]
        for index in steering.names.indices {
            steeredRows.append(Int32(classAnswers.count))
            classAnswers += rows.map { $0[index] }
            let zoneIndex = index < zone.steeredZones.count ? zone.steeredZones[index] : -1
            guard zoneIndex >= 0 else {
                templateStarts.append(0)
                continue
            }
            if zoneTemplateStart[zoneIndex] == nil {
                zoneTemplateStart[zoneIndex] = Int32(templates.count)
                templates += encode(
                    steering, zone: zone.zones[zoneIndex], key: zoneIndex, into: &table,
                    reuse: previous.flatMap { previous in
                        reusableStart[zoneIndex].map { (previous, $0, reusable) }
                    })
            }
            templateStarts.append(zoneTemplateStart[zoneIndex]!)
        }
        // The tries: the previous ones when no location class changed its answer class, else
        // rebuilt from them where classes changed (`AnswerTrie`), else from scratch.
        let tries: AnswerTries
        if let previous, previous.basis.locations === steering.locations {
            tries =
                previous.tries.classOf == answerClassOf
                ? previous.tries
                : AnswerTries(locations: steering.locations, classOf: answerClassOf, previous: previous.tries)
        } else {
            tries = AnswerTries(locations: steering.locations, classOf: answerClassOf)
        }
        return SteeringData(
            tries: tries, steeredRows: steeredRows, classAnswers: classAnswers, splitOf: splitOf, shardRows: shardRows,
            steeredTemplateStarts: templateStarts,
            steeredTemplates: templates, table: table, steeredNames: steering.names.map { $0.name.description },
            steeredAnswerSites: steering.answers.map(\.sites), answerTTLs: steering.answers.map(\.ttl),
            basis: .init(
                locations: steering.locations, answerKeys: steering.answerKeys, answerKeyEpoch: steering.answerKeyEpoch,
                zoneGeneration: zone.generation))
    }

    /// The three templates (A, AAAA, other) of every steered answer, for one zone, encoded for
    /// the zone apex as base: the apex is a suffix of every name in the zone, so the query path
    /// shifts them to fit whichever steered name was asked.
    private static func encode(
        _ steering: SteeringTable, zone: Zone, key: Int, into table: inout TemplateTableBuilder,
        reuse: (previous: SteeringData, start: Int32, indexOfKey: [Int32])?
    ) -> [Int32] {
        let apex = zone.origin
        var out: [Int32] = []
        out.reserveCapacity(3 * steering.answers.count)
        // Types other than A and AAAA: NODATA, the same for every answer of the zone.
        var other = TemplateSpec(base: apex)
        other.authority = [SnapshotBuilder.negativeSOA(zone)]
        let otherTemplate = table.add(other, key: "steered-other \(key)")
        for (position, answer) in steering.answers.enumerated() {
            if let reuse, position < steering.answerKeys.count {
                let answerKey = Int(steering.answerKeys[position])
                if answerKey >= 0, answerKey < reuse.indexOfKey.count, reuse.indexOfKey[answerKey] >= 0 {
                    // The table starts as a copy of the previous one: same template indices.
                    let first = Int(reuse.start) + 3 * Int(reuse.indexOfKey[answerKey])
                    out.append(reuse.previous.steeredTemplates[first])
                    out.append(reuse.previous.steeredTemplates[first + 1])
                    out.append(otherTemplate)
                    continue
                }
            }
            for type in [RecordType.a, .aaaa] {
                var spec = TemplateSpec(base: apex)
                let addresses = type == .a ? answer.ipv4 : answer.ipv6
                switch answer.kind {
                case .serverFailure:
                    spec.rcode = .servFail
                    spec.authoritative = false
                case .denied:
                    var soa = SnapshotBuilder.negativeSOA(zone)
                    soa.rrset.ttl = min(soa.rrset.ttl, answer.ttl)
                    spec.authority = [soa]
                case .addresses where addresses.isEmpty:
                    spec.authority = [SnapshotBuilder.negativeSOA(zone)]
                case .addresses:
                    spec.answer = [
                        Placed(
                            owner: .queryName, rrset: RRset(owner: apex, type: type, ttl: answer.ttl, rdatas: addresses)
                        )
                    ]
                }
                out.append(table.add(spec))
            }
            out.append(otherTemplate)
        }
        return out
    }
}
